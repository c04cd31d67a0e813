"""An extra update (ReLIFT's SFT step) can leave the learning-rate schedule where it was."""

import jax.numpy as jnp
import optax

from gift_jax.runtime.optim import OptimConfig, hold_schedule_position, make_optimizer


def _counts(opt_state):
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    return {path[-1].tuple_name: int(value) for path, value in found}


def test_held_update_keeps_the_schedule_count_and_advances_adam():
    tx = make_optimizer(OptimConfig(lr=1e-2, schedule="cosine"), total_steps=10)
    params = {"w": jnp.ones(4)}
    state = tx.init(params)
    _, state = tx.update(params, state, params)  # one scheduled update
    _, held = tx.update(params, state, params)
    held = hold_schedule_position(held, state)
    assert _counts(state) == {"ScaleByAdamState": 1, "ScaleByScheduleState": 1}
    assert _counts(held) == {"ScaleByAdamState": 2, "ScaleByScheduleState": 1}
