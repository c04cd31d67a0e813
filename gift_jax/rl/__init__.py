"""gift_jax.rl: pure GRPO pieces (advantages, policy losses, KL estimators, loss aggregation)."""

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
    ppo_clip_per_token,
)

__all__ = [
    "AGG_MODES",
    "KL_KINDS",
    "aggregate",
    "aggregate_loss",
    "grpo_advantages",
    "grpo_loss_terms",
    "kl_penalty",
    "loss_denominator",
    "luffy_shaped_per_token",
    "masked_mean",
    "policy_loss",
    "policy_stats",
    "ppo_clip_per_token",
]
