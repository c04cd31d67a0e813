"""gift_jax.rl: pure RL pieces (advantages, policy losses by name, KL estimators, loss aggregation,
DAPO's overlong penalty and group filter, rollout-mismatch correction)."""

from gift_jax.rl.dapo import filter_groups, overlong_penalty
from gift_jax.rl.grpo import (
    AGG_MODES,
    KL_KINDS,
    aggregate,
    aggregate_loss,
    grpo_advantages,
    grpo_loss_terms,
    kl_penalty,
    loss_denominator,
    luffy_shaped_per_token,
    masked_mean,
    policy_loss,
    policy_stats,
)
from gift_jax.rl.policy_losses import POLICY_LOSSES, policy_loss_per_token, ppo_clip_per_token
from gift_jax.rl.rollout_correction import mismatch_metrics, rollout_correction_weights

__all__ = [
    "AGG_MODES",
    "KL_KINDS",
    "POLICY_LOSSES",
    "aggregate",
    "aggregate_loss",
    "filter_groups",
    "grpo_advantages",
    "grpo_loss_terms",
    "kl_penalty",
    "loss_denominator",
    "luffy_shaped_per_token",
    "masked_mean",
    "mismatch_metrics",
    "overlong_penalty",
    "policy_loss",
    "policy_loss_per_token",
    "policy_stats",
    "ppo_clip_per_token",
    "rollout_correction_weights",
]
