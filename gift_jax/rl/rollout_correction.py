"""Rollout-vs-trainer mismatch: importance weights that correct for it, and metrics that measure it.

The engine samples in the decode layout (paged, optionally bf16 KV cache) while the update
recomputes the log-probs with the training forward, so the policy that drew a rollout and the one
the update treats as "old" differ slightly. Weighting each token's loss by
`pi_trainer / pi_rollout` corrects for it (truncated importance sampling, Yao et al. 2025; verl's
`RolloutCorrectionConfig`, TRL's `vllm_importance_sampling_mode`):

- level "token": `w_t = exp(trainer_t - rollout_t)`;
  level "sequence": `w = exp(sum_t mask_t (trainer_t - rollout_t))` for every token of the row;
- mode "truncate": `min(w, threshold)`; mode "mask": 1 where `lower <= w <= threshold`
  (`lower` defaults to `1 / threshold`), else 0 (the token, or the whole row, leaves the loss).

Log-ratios are clamped to +-20 before `exp`, as verl does. Weights carry no gradient and are 0 on
padding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp

from gift_jax.rl.grpo import kl_penalty, masked_mean
from gift_jax.rl.policy_losses import LOG_RATIO_CLAMP

CorrectionLevel = Literal["token", "sequence"]
CorrectionMode = Literal["truncate", "mask"]
CORRECTION_LEVELS = get_args(CorrectionLevel)
CORRECTION_MODES = get_args(CorrectionMode)


def correction_problems(level: str, mode: str, threshold: float, lower: float | None) -> list[str]:
    """What is wrong with these settings (empty when they can run), one message per problem."""
    problems = []
    if level not in CORRECTION_LEVELS:
        problems.append(f"level {level!r} is not one of {CORRECTION_LEVELS}")
    if mode not in CORRECTION_MODES:
        problems.append(f"mode {mode!r} is not one of {CORRECTION_MODES}")
    if not threshold >= 1:
        problems.append(f"threshold must be >= 1 (weights above it are truncated or masked), got {threshold}")
    if lower is not None and not 0 < lower <= threshold:
        problems.append(f"lower must be in (0, threshold={threshold}], got {lower}")
    if lower is not None and mode != "mask":
        problems.append("lower applies only to mode 'mask'")
    return problems


def rollout_correction_weights(
    trainer_logprobs: jax.Array,
    rollout_logprobs: jax.Array,
    mask: jax.Array,
    *,
    level: CorrectionLevel = "token",
    mode: CorrectionMode = "truncate",
    threshold: float,
    lower: float | None = None,
) -> jax.Array:
    """`[B, T]` float32 importance weights `pi_trainer / pi_rollout` (see the module docstring).

    Args:
      trainer_logprobs: `[B, T]` log-probs of the sampled tokens under the training forward (the
        update's old policy).
      rollout_logprobs: `[B, T]` the same tokens' log-probs as the sampler computed them.
      mask: `[B, T]` 1 on the completion tokens.
    """
    problems = correction_problems(level, mode, threshold, lower)
    if problems:
        raise ValueError("rollout_correction_weights: " + "; ".join(problems))
    mask = mask.astype(jnp.float32)
    log_weight = (trainer_logprobs - rollout_logprobs) * mask
    if level == "sequence":
        log_weight = jnp.broadcast_to(log_weight.sum(axis=-1, keepdims=True), log_weight.shape)
    log_weight = jnp.clip(log_weight, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if mode == "truncate":
        weights = jnp.exp(jnp.minimum(log_weight, math.log(threshold)))
    else:
        low = math.log(lower if lower is not None else 1.0 / threshold)
        weights = ((log_weight >= low) & (log_weight <= math.log(threshold))).astype(jnp.float32)
    return jax.lax.stop_gradient(weights * mask)


def mismatch_metrics(
    trainer_logprobs: jax.Array, rollout_logprobs: jax.Array, mask: jax.Array, weights: jax.Array | None = None
) -> dict[str, jax.Array]:
    """How far the sampler's log-probs are from the trainer's, over `mask` (all `[B, T]`).

    mismatch_kl_k3: KL(pi_rollout || pi_trainer), k3 estimate from the rollout's own samples.
    mismatch_logprob_diff_max: the largest |trainer - rollout| log-prob difference of a token.
    With `weights` (`rollout_correction_weights`): their mean and max, and the share of tokens they
    remove from the loss (weight 0), all over `mask`.
    """
    mask = mask.astype(jnp.float32)
    on_mask = mask.astype(bool)
    metrics = {
        "mismatch_kl_k3": masked_mean(kl_penalty(rollout_logprobs, trainer_logprobs, "k3"), mask),
        "mismatch_logprob_diff_max": jnp.max(
            jnp.where(on_mask, jnp.abs(trainer_logprobs - rollout_logprobs), 0.0), initial=0.0
        ),
    }
    if weights is not None:
        metrics["rollout_is_weight_mean"] = masked_mean(weights, mask)
        metrics["rollout_is_weight_max"] = jnp.max(jnp.where(on_mask, weights, 0.0), initial=0.0)
        metrics["rollout_is_masked_frac"] = masked_mean((weights == 0).astype(jnp.float32), mask)
    return metrics


def rollout_mismatch(
    trainer_logprobs: jax.Array,
    rollout_logprobs: jax.Array,
    mask: jax.Array,
    is_expert: jax.Array,
    *,
    correction=None,
) -> tuple[jax.Array | None, dict[str, jax.Array]]:
    """An update batch's correction weights and mismatch metrics, over its sampled (not expert) rows.

    Args:
      trainer_logprobs, rollout_logprobs, mask: `[B, T]`; is_expert: `[B]` bool (LUFFY's expert rows
        were not sampled: no rollout log-probs, no weights, no metrics).
      correction: None (no weights) or a dataclass of `rollout_correction_weights`' keyword arguments
        (`RolloutCorrectionSection`).
    Returns:
      `([B, T] weights or None, mismatch_metrics)`.
    """
    sampled = mask.astype(jnp.float32) * (~is_expert)[:, None]
    weights = None
    if correction is not None:
        weights = rollout_correction_weights(
            trainer_logprobs, rollout_logprobs, sampled, **dataclasses.asdict(correction)
        )
    return weights, mismatch_metrics(trainer_logprobs, rollout_logprobs, sampled, weights)
