"""Per-token statistics of next-token distributions given as logits `[..., V]` -> `[...]`.

Each is one or two streaming reductions over the vocabulary, so XLA fuses them without storing
anything of size `[..., V]` beyond the logits themselves. All results are float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def is_label(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """`[..., V]` bool, True at each position's label (an iota comparison XLA fuses away)."""
    vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return vocab_ids == labels[..., None].astype(jnp.int32)


def split_label_logsumexp(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The label's logit `z_y` and the log-sum-exp of all *other* logits, both `[...]`.

    `logsumexp(z) = logaddexp(z_y, other)` and `log pi(y) = -softplus(other - z_y)`; the second
    form keeps `log pi(y)` accurate when `pi(y)` is close to 1, where `z_y - logsumexp(z)` would
    be the difference of two nearly equal float32 numbers.
    """
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    other = jax.nn.logsumexp(jnp.where(is_label(logits, labels), -jnp.inf, logits), axis=-1)
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


def top1_agreement(logits: jax.Array, ref_logits: jax.Array) -> jax.Array:
    """1.0 where both distributions put their mode on the same token, else 0.0; `[...]`."""
    same = jnp.argmax(logits, axis=-1) == jnp.argmax(ref_logits, axis=-1)
    return same.astype(jnp.float32)
