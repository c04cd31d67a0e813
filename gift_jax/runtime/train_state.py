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


def optimizer_state_shardings(params, tx: optax.GradientTransformation, mesh):
    """Shardings of `tx.init(params)`: Adam's mu / nu laid out like the parameters they mirror,
    counters replicated. `params` may be arrays or `jax.ShapeDtypeStruct`s with shardings."""
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        jax.eval_shape(tx.init, params),
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, jax.sharding.Sharding),
    )


def init_train_state(params, tx: optax.GradientTransformation, mesh) -> TrainState:
    """Step 0, with the optimizer state sharded by `optimizer_state_shardings` (without explicit
    out_shardings jit would replicate mu / nu)."""
    opt_state = jax.jit(tx.init, out_shardings=optimizer_state_shardings(params, tx, mesh))(params)
    return TrainState(params, opt_state, jax.device_put(jnp.zeros((), jnp.int32), NamedSharding(mesh, PartitionSpec())))


def abstract_train_state(params, tx: optax.GradientTransformation, mesh) -> TrainState:
    """`init_train_state` as `jax.ShapeDtypeStruct`s with shardings, from abstract `params` (nothing
    allocated): the input of an ahead-of-time compile of a step."""
    shardings = optimizer_state_shardings(params, tx, mesh)
    opt_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), jax.eval_shape(tx.init, params), shardings
    )
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec()))
    return TrainState(params, opt_state, step)
