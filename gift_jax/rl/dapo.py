"""DAPO's reward shaping and group filter (Yu et al. 2025), as pure functions of per-rollout arrays.

- `overlong_penalty`: the soft overlong punishment (DAPO eq. 13, TRL's
  `get_soft_overlong_punishment`), added to the reward when `reward.overlong_buffer` is set.
- `filter_groups`: which prompts' groups carry a learning signal. A group whose rewards are all
  equal has zero advantage for every rollout, so it only dilutes the update; with
  `algo.dynamic_sampling` the RL step keeps sampling new prompts until enough groups pass.

Both take flat arrays with the rollouts of one prompt stored contiguously (as `grpo_advantages`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gift_jax.rl.grpo import grouped_rewards


def overlong_penalty(lengths: jax.Array, *, max_len: int, buffer: int) -> jax.Array:
    """`[B]` float32 penalties for completions of `lengths` tokens (`[B]`).

    0 up to `max_len - buffer` tokens, then linear down to -1 at `max_len`, and -1 beyond:
    `clip((max_len - buffer - length) / buffer, -1, 0)`.
    """
    if not 1 <= buffer <= max_len:
        raise ValueError(f"overlong_penalty: need 1 <= buffer <= max_len, got buffer={buffer}, max_len={max_len}")
    lengths = jnp.asarray(lengths, jnp.float32)
    return jnp.clip((max_len - buffer - lengths) / buffer, -1.0, 0.0)


def filter_groups(rewards: jax.Array, group_size: int) -> jax.Array:
    """`[num_prompts]` bool: a prompt's group is kept iff its rewards are not all equal.

    Args:
      rewards: `[num_prompts * group_size]` (the rewards the advantages are computed from).
      group_size: rollouts per prompt.
    """
    grouped = grouped_rewards(rewards, group_size, caller="filter_groups")
    return grouped.max(axis=1) != grouped.min(axis=1)
