"""AdamW with the paper's settings, learning-rate schedules, global-norm clipping, non-finite skipping."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "wsd")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Defaults are the paper's init stage: AdamW(0.9, 0.95), wd 0.01, clip 1.0, lr 1e-5 constant."""

    lr: float = 1e-5
    schedule: Literal["constant", "cosine", "wsd"] = "constant"
    warmup_ratio: float = 0.0  # fraction of total steps spent warming up linearly from 0
    decay_ratio: float = 0.1  # wsd only: fraction of total steps spent decaying to min_lr_ratio * lr
    min_lr_ratio: float = 0.0  # cosine / wsd floor, relative to lr
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.01
    clip_norm: float | None = 1.0

    def __post_init__(self):
        problems = []
        if not math.isfinite(self.lr) or self.lr <= 0:
            problems.append(f"lr must be a positive number, got {self.lr}")
        for name in ("warmup_ratio", "decay_ratio", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.schedule == "wsd" and self.warmup_ratio + self.decay_ratio > 1.0:
            problems.append("wsd: warmup_ratio + decay_ratio must not exceed 1")
        for name in ("b1", "b2"):  # Adam's moment decays: 1 or more never forgets, or grows without bound
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.eps > 0:
            problems.append(f"eps must be > 0, got {self.eps}")
        if not self.weight_decay >= 0:  # negative decay pushes the weights away from zero
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.clip_norm is not None and not self.clip_norm > 0:  # a negative norm flips the gradient's sign
            problems.append(f"clip_norm must be > 0 (or null for no clipping), got {self.clip_norm}")
        if problems:
            raise ValueError("; ".join(problems))


def learning_rate_schedule(config: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup, then constant / cosine / warmup-stable-decay over `total_steps` updates."""
    total_steps = max(int(total_steps), 1)
    warmup = int(round(config.warmup_ratio * total_steps))
    floor = config.lr * config.min_lr_ratio
    rest = max(total_steps - warmup, 1)
    if config.schedule == "constant":
        after = optax.constant_schedule(config.lr)
    elif config.schedule == "cosine":
        after = optax.cosine_decay_schedule(config.lr, rest, alpha=config.min_lr_ratio)
    else:  # wsd: stable at lr, then linear decay over the last decay_ratio of training
        decay = max(int(round(config.decay_ratio * total_steps)), 1)
        after = optax.join_schedules(
            [optax.constant_schedule(config.lr), optax.linear_schedule(config.lr, floor, decay)], [max(rest - decay, 0)]
        )
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), after], [warmup])


def make_optimizer(config: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """clip -> AdamW, wrapped so an update with a non-finite gradient is skipped (params unchanged).

    `optax.apply_if_finite` keeps `total_notfinite` in its state: the count of skipped updates.
    """
    parts = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    parts.append(
        optax.adamw(
            learning_rate_schedule(config, total_steps),
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
        )
    )
    return optax.apply_if_finite(optax.chain(*parts), max_consecutive_errors=2**31 - 1)


def skipped_updates(opt_state):
    """Number of updates skipped for non-finite gradients so far (`apply_if_finite`'s counter, found
    wherever it sits in a chained state; 0 for an optimizer without that wrapper)."""
    return optax.tree_utils.tree_get(opt_state, "total_notfinite", jnp.zeros((), jnp.int32))


def consecutive_skipped_updates(opt_state):
    """Updates skipped in a row up to now (`apply_if_finite`'s `notfinite_count`; 0 without the wrapper):
    the loops stop a run once it reaches `train.max_consecutive_skipped`."""
    return optax.tree_utils.tree_get(opt_state, "notfinite_count", jnp.zeros((), jnp.int32))


def _is_schedule_state(x) -> bool:
    return isinstance(x, optax.ScaleByScheduleState)


def hold_schedule_position(new_opt_state, old_opt_state):
    """`new_opt_state` with the learning-rate schedule's counter taken from `old_opt_state`.

    For an extra update that must not use up the schedule (ReLIFT's interleaved SFT updates: the
    schedule is sized for the RL updates alone). Adam's moments and bias-correction count advance.
    """
    return jax.tree.map(
        lambda new, old: old if _is_schedule_state(new) else new,
        new_opt_state,
        old_opt_state,
        is_leaf=_is_schedule_state,
    )
