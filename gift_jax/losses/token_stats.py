"""Differentiable per-token statistics of next-token distributions: logits `[..., V]` -> `[...]`.

Written with plain `jnp` reductions so that JAX autodiff applies (the baselines and the RL
log-probabilities train through them). Results are float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_logits_inputs(logits: jax.Array, labels: jax.Array, what: str, ref_logits: jax.Array | None = None) -> None:
    """Raises a ValueError naming `what` unless logits are `[..., V]` (V >= 2) matching labels."""
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{what}: logits must be [..., V] with V >= 2, got shape {logits.shape}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{what}: labels must have shape {logits.shape[:-1]} (logits without the "
            f"vocabulary axis), got {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{what}: labels must be integer token ids, got dtype {labels.dtype}")
    if ref_logits is not None and ref_logits.shape != logits.shape:
        raise ValueError(f"{what}: ref_logits must have the logits' shape {logits.shape}, got {ref_logits.shape}")


def index_mask(logits: jax.Array, index: jax.Array) -> jax.Array:
    """`[..., V]` bool, True at vocabulary id `index [...]` (an iota comparison XLA fuses away)."""
    vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return vocab_ids == index[..., None].astype(jnp.int32)


def split_label_logsumexp(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The label's logit `z_y` and the log-sum-exp of all *other* logits, both `[...]`.

    `logsumexp(z) = logaddexp(z_y, other)` and `log pi(y) = -softplus(other - z_y)`; the second
    form keeps `log pi(y)` accurate when `pi(y)` is close to 1, where `z_y - logsumexp(z)` would
    be the difference of two nearly equal float32 numbers.
    """
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    other = jax.nn.logsumexp(jnp.where(index_mask(logits, labels), -jnp.inf, logits), axis=-1)
    return label_logit, other


def label_log_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """`log softmax(logits)[label]`, `[...]` (differentiable)."""
    label_logit, other = split_label_logsumexp(logits, labels)
    return -jax.nn.softplus(other - label_logit)


def entropy(logits: jax.Array) -> jax.Array:
    """Shannon entropy `-sum_k pi_k log pi_k` in nats, `[...]` (differentiable)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def kl_divergence(logits: jax.Array, ref_logits: jax.Array) -> jax.Array:
    """Exact full-vocabulary `KL(pi || pi_ref) = sum_k pi_k (log pi_k - log pi_ref_k)`, `[...]`.

    Differentiable in `logits`; `ref_logits` is treated as a constant.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ref_log_probs = jax.nn.log_softmax(jax.lax.stop_gradient(ref_logits).astype(jnp.float32), -1)
    return jnp.sum(jnp.exp(log_probs) * (log_probs - ref_log_probs), axis=-1)
