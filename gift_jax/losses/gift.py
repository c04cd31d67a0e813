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
non-negative numbers (no cancellation), `A` is summed directly (not as a total minus `a_y`, which
loses all precision when `p_ref(y)` is near 1), and `beta` only appears inside a sigmoid, so `beta = 1e4`
neither overflows nor loses the non-target mass. Nothing of size `[..., V]` is stored beyond the
two logits arrays: the forward pass is two streamed multi-operand reductions (`vocab_reductions`),
and the gradient `g (softmax(z) - q)` is one fused elementwise pass (a custom VJP) that rebuilds
`q` on the fly from the reference logits and four per-token scalars.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from gift_jax.losses.token_stats import check_logits_inputs, index_mask
from gift_jax.losses.vocab_reductions import vocab_maxes, vocab_sums

# The official implementation's floor inside log(p~ + eps); part of the target definition.
LOG_FLOOR = 1e-10


def gift_token_loss(
    logits: jax.Array, ref_logits: jax.Array, labels: jax.Array, *, beta: float, smooth_lambda: float = 0.0
) -> jax.Array:
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


def _gift_forward(logits, ref_logits, labels, beta, smooth_lambda):
    """Loss `[...]` and the per-token scalars the gradient needs, in two streamed passes.

    With `m = max z`, `S = sum_k exp(z_k - m)`, `c = lam / V + 1e-10` and `e_k = exp(r_k - max r)`:
    `a_k = (1 - lam) e_k / sum(e) + c`, and `sum_{k != y} a_k log pi_k` splits into
    `sum_{k != y} a_k (z_k - m) - A log S`, two non-positive terms, so no pass needs `log S` first.
    """
    z = logits.astype(jnp.float32)
    r = jax.lax.stop_gradient(ref_logits).astype(jnp.float32)
    vocab = z.shape[-1]
    uniform_mass = smooth_lambda / vocab + LOG_FLOOR
    at_label = index_mask(z, labels)
    label_index = labels[..., None].astype(jnp.int32)
    label_logit = jnp.take_along_axis(z, label_index, axis=-1)[..., 0]
    ref_label_logit = jnp.take_along_axis(r, label_index, axis=-1)[..., 0]

    max_logit, ref_max_logit = vocab_maxes(z, r)
    shifted = z - max_logit[..., None]  # <= 0
    ref_exp = jnp.exp(r - ref_max_logit[..., None])
    (other_exp_sum, ref_exp_sum, ref_other_exp_sum, ref_weighted_shifted, other_shifted_sum) = vocab_sums(
        jnp.where(at_label, 0.0, jnp.exp(shifted)),
        ref_exp,
        jnp.where(at_label, 0.0, ref_exp),
        jnp.where(at_label, 0.0, ref_exp * shifted),
        jnp.where(at_label, 0.0, shifted),
    )

    # log-sum-exp over the non-label tokens; -inf when they all underflow (then log pi_y = 0).
    other_logsumexp = max_logit + jnp.log(other_exp_sum)
    logsumexp = jnp.logaddexp(label_logit, other_logsumexp)
    label_log_prob = -jax.nn.softplus(other_logsumexp - label_logit)
    ref_logsumexp = ref_max_logit + jnp.log(ref_exp_sum)

    label_mass = (1.0 - smooth_lambda) * jnp.exp(ref_label_logit - ref_logsumexp) + uniform_mass
    # A = sum_{k != y} a_k, summed directly (not 1 + V c - a_y, which cancels when p_ref(y) ~ 1).
    other_mass = (1.0 - smooth_lambda) * ref_other_exp_sum / ref_exp_sum + (vocab - 1) * uniform_mass
    # sum_{k != y} a_k log pi_k = sum_{k != y} a_k (z_k - m) - A (logsumexp - m); both terms <= 0.
    other_weighted_log_prob = (
        (1.0 - smooth_lambda) * ref_weighted_shifted / ref_exp_sum
        + uniform_mass * other_shifted_sum
        - other_mass * (logsumexp - max_logit)
    )

    target_log_odds = jnp.log(label_mass) + beta - jnp.log(other_mass)
    q_label = jax.nn.sigmoid(target_log_odds)
    q_other = jax.nn.sigmoid(-target_log_odds)
    loss = -q_label * label_log_prob - q_other * (other_weighted_log_prob / other_mass)
    # Off the label q_k = (q_other / A) a_k = exp(r_k - ref_offset) + uniform_q: one exp per
    # element in the backward pass. ref_offset is +inf when q has no mass off the label.
    ref_offset = ref_logsumexp - jnp.log((1.0 - smooth_lambda) * q_other / other_mass)
    uniform_q = uniform_mass * q_other / other_mass
    return loss, (logsumexp, ref_offset, q_label, uniform_q)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _gift_token_loss(logits, ref_logits, labels, beta, smooth_lambda):
    return _gift_forward(logits, ref_logits, labels, beta, smooth_lambda)[0]


def _gift_token_loss_fwd(logits, ref_logits, labels, beta, smooth_lambda):
    loss, scalars = _gift_forward(logits, ref_logits, labels, beta, smooth_lambda)
    return loss, (logits, ref_logits, labels, scalars)


def _gift_token_loss_bwd(beta, smooth_lambda, residuals, loss_cotangent):
    """`d loss / d z = softmax(z) - q`, built in one elementwise pass from four saved scalars."""
    del beta, smooth_lambda  # they enter through the saved scalars
    logits, ref_logits, labels, (logsumexp, ref_offset, q_label, uniform_q) = residuals
    z = logits.astype(jnp.float32)
    r = jax.lax.stop_gradient(ref_logits).astype(jnp.float32)
    q_off_label = jnp.exp(r - ref_offset[..., None]) + uniform_q[..., None]
    q = jnp.where(index_mask(z, labels), q_label[..., None], q_off_label)
    grad = loss_cotangent[..., None] * (jnp.exp(z - logsumexp[..., None]) - q)
    # The reference side and the integer labels get no gradient (None = zero cotangent).
    return grad.astype(logits.dtype), None, None


_gift_token_loss.defvjp(_gift_token_loss_fwd, _gift_token_loss_bwd)
