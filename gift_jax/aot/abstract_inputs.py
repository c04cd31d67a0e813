"""Abstract (shape + dtype + sharding, nothing allocated) inputs of the training steps.

Built exactly as the trainers lay out their real inputs: parameters sharded by the logical-axis
rules, optimizer state like the parameters, batch rows over the batch axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gift_jax.models import ModelConfig
from gift_jax.models.transformer import Transformer
from gift_jax.parallel import LOGICAL_RULES, batch_sharding, state_shardings


def abstract_model(config: ModelConfig, mesh, rules=LOGICAL_RULES) -> tuple[nnx.GraphDef, nnx.State]:
    """`(graphdef, params)` of a `Transformer(config)` whose params are sharded `ShapeDtypeStruct`s,
    as `load_hf(..., mesh=mesh)` followed by `nnx.split(model, nnx.Param)` would give them
    (`rules`: the logical-axis rules, e.g. the rollout engine's `DECODE_RULES`)."""
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(abstract, nnx.Param)
    shardings = state_shardings(params, mesh, rules)
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, shardings)
    return graphdef, params


def abstract_batch(spec: dict[str, tuple[tuple[int, ...], jnp.dtype]], mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """`{key: (shape, dtype)}` -> batch-sharded `ShapeDtypeStruct`s (leading dim over the batch axes)."""
    return {
        key: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))
        for key, (shape, dtype) in spec.items()
    }


def init_batch_spec(rows: int, length: int, *, old_logprobs: bool, packed: bool = False) -> dict:
    """The arrays of an init-stage batch (`gift_jax.data.batching`): `[rows, length]` each.

    packed: rows hold several demonstrations (`data.pack`) and carry `segment_ids`, which change the
    attention the step compiles (masking by segment instead of by the padding mask).
    """
    keys = ("input_ids", "target_ids", "positions", "attention_mask") + (("segment_ids",) if packed else ())
    spec = {key: ((rows, length), jnp.int32) for key in keys}
    spec["loss_mask"] = ((rows, length), jnp.float32)
    if old_logprobs:
        spec["old_logprobs"] = ((rows, length), jnp.float32)
    return spec


def rl_batch_spec(
    rows: int, prompt_length: int, completion_length: int, *, expert: bool, reference: bool, is_weights: bool = False
) -> dict:
    """The arrays of a GRPO update batch (`gift_jax.rl.rollouts.update_batch` + the trainer's log-probs,
    and the importance weights of `algo.rollout_correction` when `is_weights`)."""
    width = prompt_length + completion_length - 1
    spec = {key: ((rows, width), jnp.int32) for key in ("input_ids", "positions", "attention_mask")}
    spec["targets"] = ((rows, completion_length), jnp.int32)
    optional = (("ref_logprobs",) if reference else ()) + (("is_weights",) if is_weights else ())
    for key in ("completion_mask", "old_logprobs") + optional:
        spec[key] = ((rows, completion_length), jnp.float32)
    spec["advantages"] = ((rows,), jnp.float32)
    if expert:
        spec["is_expert"] = ((rows,), jnp.bool_)
    return spec


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a pytree of sharded `ShapeDtypeStruct`s (its shard of each leaf)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.ShapeDtypeStruct) or jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended):
            continue  # static arguments (a graphdef) and PRNG keys: nothing, or a few bytes
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        size = 1
        for d in shape:
            size *= d
        total += size * jnp.dtype(leaf.dtype).itemsize
    return total
