"""The training state every stage donates to its jitted update, and its sharded initialisation."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec


class TrainState(NamedTuple):
    """Everything that changes during training (donated to the step)."""

    params: Any  # nnx.State of the policy's nnx.Param variables
    opt_state: Any
    step: jax.Array  # [] int32, number of optimizer updates applied or skipped


def init_train_state(params, tx: optax.GradientTransformation, mesh) -> TrainState:
    """Step 0: optimizer state laid out like the parameters it mirrors (Adam's mu / nu sharded as the
    weights are), counters replicated. Without explicit out_shardings jit would replicate mu / nu."""
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shardings = optax.tree_map_params(
        tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params), param_shardings,
        transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
    return TrainState(params, opt_state, jax.device_put(jnp.zeros((), jnp.int32), replicated))
