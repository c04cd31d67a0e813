"""The GIFT token loss: soft cross-entropy against a Gibbs-tilted base distribution.

At each supervised position, with the frozen base model's distribution `p_ref` over `V` tokens and
the expert token `y`:

    p~_k   = (1 - lam) p_ref_k + lam / V                  (optional uniform smoothing)
    zhat_k = log(p~_k + 1e-10) + beta [k == y]
    q      = softmax(zhat)                                  (a constant: no gradient)
    loss   = -sum_k q_k log softmax(z)_k                    (z: the policy's logits)

Closed form. Write `a_k = p~_k + 1e-10`. Then `q_k = a_k / Z` for `k != y`,
`q_y = a_y e^beta / Z` with `Z = A + a_y e^beta` and `A = sum_{k != y} a_k`, so

    q_y  = sigmoid(log a_y + beta - log A),    1 - q_y = sigmoid(-(log a_y + beta - log A))
    loss = -q_y log pi_y - (1 - q_y) * sum_{k != y} (a_k / A) log pi_k.

This is the official formula *including* the 1e-10 floor, not an approximation of it: the floor
only enters through `a_k`, which is summed over the vocabulary anyway. Both terms are sums of
non-negative numbers (no cancellation), `A` is summed directly (not as `1 - a_y`, which loses all
precision when `p_ref(y)` is near 1), and `beta` only appears inside a sigmoid, so `beta = 1e4`
neither overflows nor loses the non-target mass. Nothing of size `[..., V]` is needed beyond the
two logits arrays: a handful of streamed reductions in the forward pass, and one fused elementwise
pass `g (softmax(z) - q)` for the gradient (a custom VJP), where `q` is rebuilt on the fly from the
reference logits and four per-token scalars.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from gift_jax.losses.chunking import map_logit_chunks
from gift_jax.losses.token_stats import is_label, split_label_logsumexp

# The official implementation's floor inside log(p~ + eps); part of the target definition.
LOG_FLOOR = 1e-10


def check_logits_inputs(logits: jax.Array, labels: jax.Array, what: str,
                        ref_logits: jax.Array | None = None) -> None:
    """Raises a ValueError naming `what` unless logits are `[..., V]` (V >= 2) matching labels."""
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{what}: logits must be [..., V] with V >= 2, got shape {logits.shape}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{what}: labels must have shape {logits.shape[:-1]} (logits without the "
                         f"vocabulary axis), got {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{what}: labels must be integer token ids, got dtype {labels.dtype}")
    if ref_logits is not None and ref_logits.shape != logits.shape:
        raise ValueError(f"{what}: ref_logits must have the logits' shape {logits.shape}, "
                         f"got {ref_logits.shape}")


def gift_token_loss(logits: jax.Array, ref_logits: jax.Array, labels: jax.Array, *,
                    beta: float, smooth_lambda: float = 0.0) -> jax.Array:
    """Per-token GIFT loss (module docstring), exact to float32 rounding.

    Args:
      logits: `[..., V]` policy logits (any float dtype; computed in float32).
      ref_logits: `[..., V]` frozen base-model logits; no gradient flows into them.
      labels: `[...]` int expert tokens `y` in `[0, V)`.
      beta: inverse temperature (static float; 0 = distil the base, large = plain SFT).
      smooth_lambda: weight of the uniform distribution mixed into `p_ref` (static, in [0, 1]).
    Returns:
      `[...]` float32 losses. The gradient w.r.t. `logits` is `softmax(logits) - q` per token.
    """
    check_logits_inputs(logits, labels, "gift_token_loss", ref_logits)
    return _gift_token_loss(logits, ref_logits, labels, float(beta), float(smooth_lambda))


def _smoothed_ref_mass(ref_logit: jax.Array, ref_logsumexp: jax.Array, smooth_lambda: float,
                       vocab: int) -> jax.Array:
    """`a_k = (1 - lam) p_ref_k + lam / V + 1e-10` from reference logits (elementwise, any shape).

    Elementwise on purpose: XLA fuses it into each reduction that consumes it.
    """
    p_ref = jnp.exp(ref_logit - ref_logsumexp)
    return (1.0 - smooth_lambda) * p_ref + (smooth_lambda / vocab + LOG_FLOOR)


def _gift_forward(logits, ref_logits, labels, beta, smooth_lambda):
    """Loss `[...]` and the per-token scalars the gradient needs."""
    z = logits.astype(jnp.float32)
    r = jax.lax.stop_gradient(ref_logits).astype(jnp.float32)
    at_label = is_label(z, labels)

    label_logit, other_logsumexp = split_label_logsumexp(z, labels)
    logsumexp = jnp.logaddexp(label_logit, other_logsumexp)
    label_log_prob = -jax.nn.softplus(other_logsumexp - label_logit)

    vocab = z.shape[-1]
    ref_logsumexp = jax.nn.logsumexp(r, axis=-1)
    mass = _smoothed_ref_mass(r, ref_logsumexp[..., None], smooth_lambda, vocab)
    ref_label_logit = jnp.take_along_axis(r, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    label_mass = _smoothed_ref_mass(ref_label_logit, ref_logsumexp, smooth_lambda, vocab)
    other_mass = jnp.sum(jnp.where(at_label, 0.0, mass), axis=-1)
    # sum_{k != y} a_k log pi_k (<= 0)
    other_weighted_log_prob = jnp.sum(
        jnp.where(at_label, 0.0, mass * (z - logsumexp[..., None])), axis=-1)

    target_log_odds = jnp.log(label_mass) + beta - jnp.log(other_mass)
    q_label = jax.nn.sigmoid(target_log_odds)
    q_other = jax.nn.sigmoid(-target_log_odds)
    loss = -q_label * label_log_prob - q_other * (other_weighted_log_prob / other_mass)
    # q_k = other_scale * a_k off the label.
    other_scale = q_other / other_mass
    return loss, (logsumexp, ref_logsumexp, q_label, other_scale)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _gift_token_loss(logits, ref_logits, labels, beta, smooth_lambda):
    return _gift_forward(logits, ref_logits, labels, beta, smooth_lambda)[0]


def _gift_token_loss_fwd(logits, ref_logits, labels, beta, smooth_lambda):
    loss, scalars = _gift_forward(logits, ref_logits, labels, beta, smooth_lambda)
    return loss, (logits, ref_logits, labels, scalars)


def _gift_token_loss_bwd(beta, smooth_lambda, residuals, loss_cotangent):
    """`d loss / d z = softmax(z) - q`, built in one elementwise pass from the saved scalars."""
    del beta  # enters only through the saved q_label / other_scale
    logits, ref_logits, labels, (logsumexp, ref_logsumexp, q_label, other_scale) = residuals
    z = logits.astype(jnp.float32)
    r = jax.lax.stop_gradient(ref_logits).astype(jnp.float32)
    mass = _smoothed_ref_mass(r, ref_logsumexp[..., None], smooth_lambda, z.shape[-1])
    q = jnp.where(is_label(z, labels), q_label[..., None], other_scale[..., None] * mass)
    policy = jnp.exp(z - logsumexp[..., None])
    grad = loss_cotangent[..., None] * (policy - q)
    # The reference side and the integer labels get no gradient (None = zero cotangent).
    return grad.astype(logits.dtype), None, None


_gift_token_loss.defvjp(_gift_token_loss_fwd, _gift_token_loss_bwd)


def gift_loss_from_hidden(hidden: jax.Array, w_out: jax.Array, ref_hidden: jax.Array,
                          ref_w_out: jax.Array, labels: jax.Array, mask: jax.Array, *,
                          beta: float, smooth_lambda: float = 0.0,
                          chunk_size: int = 512) -> jax.Array:
    """Token-mean GIFT loss straight from final hidden states, without whole-sequence logits.

    Args:
      hidden: `[B, T, d]` policy final hidden states (after the final norm).
      w_out: `[d, V]` policy output projection.
      ref_hidden: `[B, T, d_ref]` frozen base-model final hidden states.
      ref_w_out: `[d_ref, V]` base-model output projection.
      labels: `[B, T]` int next-token targets aligned with the hidden positions.
      mask: `[B, T]` float, 1 on supervised tokens, 0 elsewhere.
      beta, smooth_lambda: as in `gift_token_loss`.
      chunk_size: sequence positions per chunk; a chunk holds `[B, chunk_size, V]` logits.
    Returns:
      Scalar float32 `sum(mask * loss) / max(sum(mask), 1)`. Gradients reach `hidden` and
      `w_out`, never the reference side.
    """
    if labels.shape != hidden.shape[:2] or mask.shape != hidden.shape[:2]:
        raise ValueError(f"gift_loss_from_hidden: labels {labels.shape} and mask {mask.shape} must "
                         f"both be [B, T]={hidden.shape[:2]}")
    mask = mask.astype(jnp.float32)
    supervised = mask > 0
    safe_labels = jnp.where(supervised, labels, 0)  # padding labels may be any value (e.g. -100)

    def token_fn(logits, ref_logits, chunk_labels):
        return gift_token_loss(logits, ref_logits, chunk_labels, beta=beta,
                               smooth_lambda=smooth_lambda)

    losses = map_logit_chunks(token_fn, hidden, w_out, safe_labels, ref_hidden=ref_hidden,
                              ref_w_out=ref_w_out, chunk_size=chunk_size)
    loss_sum = jnp.sum(jnp.where(supervised, mask * losses, 0.0))
    return loss_sum / jnp.maximum(jnp.sum(mask), 1.0)
