"""Per-token training metrics computed from the logits already at hand (no extra forward pass).

`token_metrics` is for logging only: it takes no gradient and streams over the vocabulary
(`vocab_reductions`), so computing it next to a loss adds no `[..., V]` buffers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gift_jax.losses.token_stats import index_mask
from gift_jax.losses.vocab_reductions import vocab_max_argmax, vocab_sums


def token_metrics(logits: jax.Array, ref_logits: jax.Array | None, labels: jax.Array) -> dict[str, jax.Array]:
    """Per-token statistics of the policy, and of its distance to the base when given.

    Args:
      logits: `[..., V]` policy logits.
      ref_logits: `[..., V]` base-model logits, or None.
      labels: `[...]` int target tokens.
    Returns:
      Float32 `[...]` arrays: `entropy` (nats) and `nll` (`-log pi(label)`) always; with
      `ref_logits` also `kl_to_base` (exact `KL(pi || pi_base)` over the full vocabulary) and
      `top1_agree` (1.0 where both argmaxes coincide).
    """
    z = jax.lax.stop_gradient(logits).astype(jnp.float32)
    r = None if ref_logits is None else jax.lax.stop_gradient(ref_logits).astype(jnp.float32)
    if r is None:
        max_logit, argmax = vocab_max_argmax(z)
    else:  # one pass over both
        (max_logit, argmax), (ref_max_logit, ref_argmax) = vocab_max_argmax(z, r)
    shifted = z - max_logit[..., None]  # <= 0, and exactly 0 at the argmax
    policy_exp = jnp.exp(shifted)
    label_logit = jnp.take_along_axis(shifted, labels[..., None].astype(jnp.int32), -1)[..., 0]
    # Sums leave out the argmax (whose term is exactly 1) so that log S = log1p(rest) keeps its
    # precision for peaked distributions, and the label so that -log pi_y does too.
    terms = [
        jnp.where(index_mask(z, argmax), 0.0, policy_exp),
        jnp.where(index_mask(z, labels), 0.0, policy_exp),
        policy_exp * shifted,
    ]
    if r is not None:
        ref_shifted = r - ref_max_logit[..., None]
        terms += [jnp.where(index_mask(r, ref_argmax), 0.0, jnp.exp(ref_shifted)), policy_exp * (shifted - ref_shifted)]
    sums = vocab_sums(*terms)

    non_max_exp_sum, non_label_exp_sum, weighted_shifted = sums[:3]
    log_exp_sum = jnp.log1p(non_max_exp_sum)  # log S, S = sum_k exp(z_k - m)
    metrics = {
        # H = log S - sum_k pi_k (z_k - m): both terms >= 0.
        "entropy": log_exp_sum - weighted_shifted / (1.0 + non_max_exp_sum),
        # -log pi_y = softplus(log-sum-exp of the other tokens - z_y).
        "nll": jax.nn.softplus(jnp.log(non_label_exp_sum) - label_logit),
    }
    if ref_logits is not None:
        ref_non_max_exp_sum, weighted_log_ratio = sums[3:]
        # KL = sum_k pi_k [(z_k - m) - (r_k - m_ref)] - (log S - log S_ref)
        metrics["kl_to_base"] = weighted_log_ratio / (1.0 + non_max_exp_sum) - (
            log_exp_sum - jnp.log1p(ref_non_max_exp_sum)
        )
        metrics["top1_agree"] = (argmax == ref_argmax).astype(jnp.float32)
    return metrics
