"""Pure GRPO pieces: group advantages, policy-loss aggregation, KL estimators, LUFFY shaping.

The policy losses themselves (PPO-clip, GSPO, CISPO) are registered by name in `policy_losses.py`.

Every function here runs under `jax.jit`: arrays and static options in, arrays out. Shapes use
`B` for sequences (rollouts) and `T` for response positions; `mask` is 1 on the response tokens
that are trained and 0 on padding.

Gradient accumulation. A loss is a weighted sum divided by a count, and the count belongs to the
whole mini-batch (one optimizer step), not to the micro-batch that happens to be in memory. So
every aggregation is split into `(numerator, denominator)` (`aggregate`); the trainer computes the
mini-batch's denominator once with `loss_denominator`, passes it to each micro-batch as
`global_denominator`, and sums the micro-batch losses. The result equals the loss of the whole
mini-batch computed in one piece, whatever the micro-batch size.
"""

from typing import Literal

import jax
import jax.numpy as jnp

from gift_jax.rl.policy_losses import (
    AGG_MODES,
    LOG_RATIO_CLAMP,
    AggMode,
    log_ratio,
    per_sequence_to_tokens,
    policy_loss_per_token,
    resolve_policy_loss,
)

KLKind = Literal["k1", "k2", "k3"]
KL_KINDS = ("k1", "k2", "k3")
# verl clamps the k3 estimate itself to this range so one outlier token cannot dominate the loss.
K3_CLAMP = 10.0
# LUFFY's default shaping constant: f(p) = p / (p + gamma).
LUFFY_GAMMA = 0.1


def grouped_rewards(rewards: jax.Array, group_size: int, *, caller: str) -> jax.Array:
    """Flat `[num_prompts * group_size]` rewards -> `[num_prompts, group_size]` float32.

    Raises ValueError naming `caller` for a non-flat array, a group of one, or a count that does
    not split into groups."""
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"{caller}: rewards must be flat [num_prompts * group_size], got shape {rewards.shape}")
    if group_size < 2:
        raise ValueError(
            f"{caller}: group_size must be >= 2 (a single rollout has no group to compare against), got {group_size}"
        )
    if rewards.shape[0] % group_size:
        raise ValueError(f"{caller}: {rewards.shape[0]} rewards do not split into groups of {group_size}")
    return rewards.astype(jnp.float32).reshape(-1, group_size)


def grpo_advantages(rewards: jax.Array, group_size: int, *, norm_by_std: bool = False, eps: float = 1e-6) -> jax.Array:
    """Group-relative advantages: each reward minus the mean reward of its prompt's group.

    Args:
      rewards: `[num_prompts * group_size]`, the rollouts of one prompt stored contiguously.
      group_size: rollouts per prompt (static).
      norm_by_std: also divide by the group's sample standard deviation (ddof=1) plus `eps`
        (original GRPO). The GIFT paper's RL stage leaves it off (Dr. GRPO style).
      eps: added to the standard deviation so a group whose rewards are all equal gives 0, not nan.
    Returns:
      `[num_prompts * group_size]` float32 advantages.
    """
    grouped = grouped_rewards(rewards, group_size, caller="grpo_advantages")
    centred = grouped - grouped.mean(axis=1, keepdims=True)
    if norm_by_std:
        centred = centred / (grouped.std(axis=1, ddof=1, keepdims=True) + eps)
    return centred.reshape(-1)


def luffy_shaped_per_token(logprobs: jax.Array, advantages: jax.Array, *, gamma: float = LUFFY_GAMMA) -> jax.Array:
    """LUFFY's policy-shaped objective for off-policy (expert) tokens, as a loss to minimise.

    Yan et al. 2025, "Learning to Reason under Off-Policy Guidance" (LUFFY): expert tokens were
    not sampled from any policy we can evaluate, so the importance ratio's denominator is taken
    as 1 and the ratio becomes the current probability `p = exp(logprobs)`. It is reshaped by
    `f(p) = p / (p + gamma)` and not clipped:

        loss = -A * p / (p + gamma),  d loss / d logp = -A * gamma * p / (p + gamma)^2.

    Compared with `-A * p` the gradient keeps weight on low-probability expert tokens (the
    factor `gamma / (p + gamma)^2` is largest for small p), which is LUFFY's point.

    Args:
      logprobs: `[B, T]` current-policy log-probabilities of the expert tokens.
      advantages: `[B]` or `[B, T]`.
    Returns:
      `[B, T]` per-token loss.
    """
    advantages = per_sequence_to_tokens(advantages, logprobs, "advantages")
    prob = jnp.exp(logprobs)
    return -advantages * prob / (prob + gamma)


def kl_penalty(logprobs: jax.Array, ref_logprobs: jax.Array, kind: KLKind) -> jax.Array:
    """Per-token estimate of KL(pi || pi_ref) from the sampled token only (Schulman's k1/k2/k3).

    With `d = logprobs - ref_logprobs`:
      k1 = d                        (unbiased, high variance, can be negative)
      k2 = d^2 / 2                  (biased, low variance)
      k3 = exp(-d) - (-d) - 1       (unbiased, >= 0); as in verl, `-d` is clamped to +-20 before
                                    the exp and the result to +-10.
    All inputs/outputs `[B, T]` (any shape, elementwise).
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k2":
        return 0.5 * jnp.square(logprobs - ref_logprobs)
    if kind == "k3":
        ref_minus_logp = jnp.clip(ref_logprobs - logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return jnp.clip(jnp.exp(ref_minus_logp) - ref_minus_logp - 1.0, -K3_CLAMP, K3_CLAMP)
    raise ValueError(f"kl_penalty: unknown kind {kind!r}; expected one of {KL_KINDS}")


def _sequence_has_tokens(mask: jax.Array) -> jax.Array:
    """`[B]` float: 1 for rows of `mask` with at least one token (padding rows count as 0)."""
    return (mask.sum(axis=-1) > 0).astype(jnp.float32)


def loss_denominator(mask: jax.Array, agg_mode: AggMode, *, seq_normaliser: float | None = None) -> jax.Array:
    """The count a loss over `mask` (`[B, T]`) is divided by, as a float32 scalar.

    token-mean:              number of masked tokens.
    seq-mean-token-mean:     number of sequences with at least one masked token.
    seq-mean-token-sum-norm: number of such sequences * `seq_normaliser` (default T, the mask's
                             length; pass the generation budget to keep it constant across steps).

    Compute it over the whole mini-batch and hand it to each micro-batch's `aggregate_loss`.
    """
    mask = mask.astype(jnp.float32)
    if agg_mode == "token-mean":
        return mask.sum()
    num_sequences = _sequence_has_tokens(mask).sum()
    if agg_mode == "seq-mean-token-mean":
        return num_sequences
    if agg_mode == "seq-mean-token-sum-norm":
        normaliser = mask.shape[-1] if seq_normaliser is None else seq_normaliser
        return num_sequences * jnp.asarray(normaliser, jnp.float32)
    raise ValueError(f"unknown agg_mode {agg_mode!r}; expected one of {AGG_MODES}")


def aggregate(
    per_token_loss: jax.Array, mask: jax.Array, agg_mode: AggMode, *, seq_normaliser: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """Splits a masked `[B, T]` loss into `(numerator, denominator)` scalars; loss = num / den.

    token-mean:              num = sum of masked token losses,         den = number of tokens.
    seq-mean-token-mean:     num = sum over sequences of each one's token-mean loss,
                             den = number of sequences with any token (empty rows are skipped).
    seq-mean-token-sum-norm: num = sum of masked token losses,
                             den = sequences with any token * `seq_normaliser` (default T).
                             This is Dr. GRPO's constant normaliser: each sequence's token sum
                             / T, averaged over sequences. (verl 0.4 divides by T only, which
                             makes its loss scale with the micro-batch size; the mean over
                             sequences removes that.)

    Numerators of micro-batches add up to the mini-batch's numerator, and so do denominators,
    which is what makes gradient accumulation exact (see the module docstring).
    """
    mask = mask.astype(jnp.float32)
    masked = per_token_loss * mask
    if agg_mode == "seq-mean-token-mean":
        token_counts = mask.sum(axis=-1)
        sequence_means = masked.sum(axis=-1) / jnp.maximum(token_counts, 1.0)
        numerator = (sequence_means * _sequence_has_tokens(mask)).sum()
    else:
        numerator = masked.sum()
    return numerator, loss_denominator(mask, agg_mode, seq_normaliser=seq_normaliser)


def aggregate_loss(
    per_token_loss: jax.Array,
    mask: jax.Array,
    agg_mode: AggMode,
    *,
    seq_normaliser: float | None = None,
    global_denominator: jax.Array | None = None,
) -> jax.Array:
    """Scalar loss: `aggregate`'s numerator over `global_denominator` (default: its own).

    A micro-batch passes the mini-batch's `loss_denominator` as `global_denominator`; summing the
    micro-batch losses then gives exactly the mini-batch loss. The denominator is floored at 1 so
    an all-padding batch gives 0 instead of nan.
    """
    numerator, denominator = aggregate(per_token_loss, mask, agg_mode, seq_normaliser=seq_normaliser)
    if global_denominator is not None:
        denominator = global_denominator
    return numerator / jnp.maximum(denominator, 1.0)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over positions where `mask` is 1 (0 for an empty mask). `[B, T]` -> `[]`."""
    mask = mask.astype(jnp.float32)
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def policy_stats(
    logprobs: jax.Array, old_logprobs: jax.Array, mask: jax.Array, clipped: jax.Array, dual_clipped: jax.Array
) -> dict[str, jax.Array]:
    """Diagnostics of one policy update, token means over `mask` (all inputs `[B, T]`).

    clip_frac / dual_clip_frac: share of tokens whose gradient the (dual) clip removed.
    approx_kl_k3, approx_kl_k2: KL(pi_old || pi) estimated from the old policy's samples.
    ratio_mean, ratio_max: the importance ratio pi / pi_old over trained tokens.
    """
    ratio = jnp.exp(log_ratio(logprobs, old_logprobs))
    bool_mask = mask.astype(bool)
    return {
        "clip_frac": masked_mean(clipped.astype(jnp.float32), mask),
        "dual_clip_frac": masked_mean(dual_clipped.astype(jnp.float32), mask),
        # The samples come from pi_old, so KL(pi_old || pi) takes log(pi_old / pi) as "d".
        "approx_kl_k3": masked_mean(kl_penalty(old_logprobs, logprobs, "k3"), mask),
        "approx_kl_k2": masked_mean(kl_penalty(old_logprobs, logprobs, "k2"), mask),
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_max": jnp.max(jnp.where(bool_mask, ratio, -jnp.inf), initial=0.0),
    }


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float | None = None,
    clip_high: float | None = None,
    agg_mode: AggMode | None = None,
    dual_clip_c: float | None = None,
    seq_normaliser: float | None = None,
    global_denominator: jax.Array | None = None,
    loss: str = "ppo_clip",
    is_weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Aggregated policy loss of a batch: the registered loss `loss` per token + `aggregate_loss`.

    Args:
      logprobs, old_logprobs, mask: `[B, T]`.
      advantages: `[B]` or `[B, T]`.
      loss: a name in `gift_jax.rl.policy_losses.POLICY_LOSSES` (ppo_clip, gspo, cispo).
      clip_low, clip_high, agg_mode: None takes the loss's defaults (ppo_clip: 0.2, 0.2, token-mean).
      is_weights: optional `[B]` or `[B, T]` importance weights multiplied into the per-token loss
        without gradient (e.g. `rollout_correction_weights`).
      seq_normaliser, global_denominator: see `aggregate` / `aggregate_loss`.
    Returns:
      `(loss [], metrics)`; metrics are `grpo_loss_terms`' (`policy_stats` and `pg_loss_token_mean`)
      plus `pg_loss`.
    """
    spec = resolve_policy_loss(loss, clip_low=clip_low, clip_high=clip_high, agg_mode=agg_mode)
    per_token, metrics = grpo_loss_terms(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        loss=loss,
        clip_low=spec.clip_low,
        clip_high=spec.clip_high,
        dual_clip_c=dual_clip_c,
        is_weights=is_weights,
    )
    value = aggregate_loss(
        per_token, mask, spec.agg_mode, seq_normaliser=seq_normaliser, global_denominator=global_denominator
    )
    return value, {**metrics, "pg_loss": value}


def grpo_loss_terms(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float | None = None,
    clip_high: float | None = None,
    dual_clip_c: float | None = None,
    loss: str = "ppo_clip",
    is_weights: jax.Array | None = None,
    is_expert: jax.Array | None = None,
    shaping_gamma: float = LUFFY_GAMMA,
    ref_logprobs: jax.Array | None = None,
    kl_coef: float = 0.0,
    kl_kind: KLKind = "k3",
    entropy: jax.Array | None = None,
    entropy_coef: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-token GRPO loss with every optional term, ready for `aggregate` / `aggregate_loss`.

        loss_t = pg_t + kl_coef * KL_t - entropy_coef * H_t

    where `pg_t` is the policy loss `loss` (`policy_loss_per_token`: clip settings left at None take
    its defaults, `is_weights` multiply it without gradient) on on-policy tokens and, where
    `is_expert` is set, LUFFY's shaped objective `-A p / (p + shaping_gamma)` (no clip, no
    importance weight; see `luffy_shaped_per_token`).

    Args:
      logprobs, old_logprobs, mask: `[B, T]`. For expert sequences `old_logprobs` is unused.
      advantages: `[B]` or `[B, T]`.
      is_weights: optional `[B]` or `[B, T]` importance weights of the on-policy tokens.
      is_expert: optional `[B]` or `[B, T]` bool, true on off-policy (expert) tokens.
      ref_logprobs: `[B, T]` reference-model log-probs; needed when `kl_coef != 0`.
      entropy: `[B, T]` policy entropy per position; needed when `entropy_coef != 0`.
    Returns:
      `(per_token_loss [B, T], stats)`; stats are token means over `mask` (and over on-policy
      tokens for the clip statistics) of the terms that are present.
    """
    mask = mask.astype(jnp.float32)
    per_token, clipped, dual_clipped = policy_loss_per_token(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        loss=loss,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip_c=dual_clip_c,
        is_weights=is_weights,
    )
    on_policy_mask = mask
    stats = {}
    if is_expert is not None:
        expert = per_sequence_to_tokens(is_expert, logprobs, "is_expert").astype(bool)
        shaped = luffy_shaped_per_token(logprobs, advantages, gamma=shaping_gamma)
        per_token = jnp.where(expert, shaped, per_token)
        on_policy_mask = mask * (~expert)
        stats["expert_token_frac"] = masked_mean(expert.astype(jnp.float32), mask)
        stats["expert_prob_mean"] = masked_mean(jnp.exp(logprobs), mask * expert)
    stats.update(policy_stats(logprobs, old_logprobs, on_policy_mask, clipped, dual_clipped))
    stats["pg_loss_token_mean"] = masked_mean(per_token, mask)
    if kl_coef != 0.0:
        if ref_logprobs is None:
            raise ValueError("grpo_loss_terms: kl_coef != 0 needs ref_logprobs")
        kl = kl_penalty(logprobs, ref_logprobs, kl_kind)
        per_token = per_token + kl_coef * kl
        stats["kl_to_ref"] = masked_mean(kl, mask)
    if entropy_coef != 0.0:
        if entropy is None:
            raise ValueError("grpo_loss_terms: entropy_coef != 0 needs entropy")
        per_token = per_token - entropy_coef * entropy
        stats["entropy"] = masked_mean(entropy, mask)
    return per_token, stats
