"""Per-token losses of the SFT-family baselines GIFT is compared with (paper section 4).

`s_t = (x, y*_<t)`, `pi = softmax(logits)`, `pi_b` the frozen base model, `sg` stop-gradient:

    SFT            -(1 - eps) log pi(y*_t | s_t) - eps mean_k log pi(k | s_t)   (label smoothing eps, default 0)
    SFT + entropy  SFT - alpha H(pi(. | s_t))
    DFT            -sg(pi(y*_t | s_t)) log pi(y*_t | s_t)
    ASFT           DFT + gamma KL(pi(. | s_t) || pi_b(. | s_t))
    PSFT           -min(r_t, clip(r_t, 1 - eps, 1 + eps)),  r_t = pi(y*_t | s_t) / pi_old(y*_t | s_t)

All map logits `[..., V]` (and `labels [...]`) to float32 losses `[...]` and are differentiated by
JAX autodiff; the chunked driver (`chunking.py`) bounds the memory that costs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gift_jax.losses.token_stats import (
    check_logits_inputs,
    entropy,
    kl_divergence,
    label_log_prob,
)

# PSFT ratios are exp(log_ratio); above e^20 the ratio is clipped anyway (zero gradient), and the
# clamp keeps exp finite so that 0 * inf cannot turn the gradient into nan.
MAX_LOG_RATIO = 20.0


def sft_token_loss(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy on the expert token, `[...]`; with `label_smoothing` eps the target is
    `(1 - eps) onehot(y*) + eps / V`, so no token's probability is driven towards zero."""
    check_logits_inputs(logits, labels, "sft_token_loss")
    nll = -label_log_prob(logits, labels)
    if not label_smoothing:  # a Python float: the plain loss traces exactly as without the option
        return nll
    uniform_nll = -jnp.mean(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform_nll


def sft_entropy_token_loss(logits: jax.Array, labels: jax.Array, *, alpha: float) -> jax.Array:
    """Cross-entropy minus `alpha` times the policy's entropy (nats), `[...]`."""
    check_logits_inputs(logits, labels, "sft_entropy_token_loss")
    return -label_log_prob(logits, labels) - alpha * entropy(logits)


def dft_token_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Dynamic fine-tuning: cross-entropy weighted by the (constant) probability of the label."""
    check_logits_inputs(logits, labels, "dft_token_loss")
    log_prob = label_log_prob(logits, labels)
    return -jax.lax.stop_gradient(jnp.exp(log_prob)) * log_prob


def asft_token_loss(logits: jax.Array, ref_logits: jax.Array, labels: jax.Array, *, gamma: float) -> jax.Array:
    """Anchored SFT: DFT plus `gamma` times the exact full-vocabulary KL(pi || pi_base)."""
    check_logits_inputs(logits, labels, "asft_token_loss", ref_logits)
    return dft_token_loss(logits, labels) + gamma * kl_divergence(logits, ref_logits)


def psft_token_loss(
    logits: jax.Array, labels: jax.Array, old_logprobs: jax.Array, *, clip_eps: float = 0.2
) -> jax.Array:
    """Proximal SFT: the PPO clipped surrogate with advantage 1 on the expert token.

    Args:
      logits: `[..., V]` current policy logits.
      labels: `[...]` expert tokens.
      old_logprobs: `[...]` log-probabilities of the labels under the pre-update policy (constant).
      clip_eps: clip range of the probability ratio.
    """
    check_logits_inputs(logits, labels, "psft_token_loss")
    if old_logprobs.shape != labels.shape:
        raise ValueError(
            f"psft_token_loss: old_logprobs must have the labels' shape {labels.shape}, got {old_logprobs.shape}"
        )
    log_ratio = label_log_prob(logits, labels) - jax.lax.stop_gradient(old_logprobs)
    ratio = jnp.exp(jnp.minimum(log_ratio, MAX_LOG_RATIO))
    return -jnp.minimum(ratio, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps))
