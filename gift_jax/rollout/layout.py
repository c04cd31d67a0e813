"""The weights' layout for decoding: in the compute dtype, replicated over the batch axes,
tensor-parallel over `tensor`.

Training shards every weight over `fsdp` (`LOGICAL_RULES["embed"]`); a decode step under that
layout all-gathers every weight for every generated token. Before a rollout phase the policy is
copied once into `DECODE_RULES` (the same rules without `fsdp`), so a decode step only needs the
tensor-parallel collectives of its activations; the training-layout parameters are left untouched
and the copy is dropped when the rollout phase ends (the training layout is therefore "restored"
at no cost, at the price of one replicated-over-batch copy of the weights while sampling).

That copy is stored in the compute dtype (`decode_param_dtype`): the forward pass casts every
weight to the compute dtype before using it anyway, so a bf16 copy of f32 master weights decodes
exactly the same tokens with half the memory (a 7B policy: 15 instead of 30 GB per chip when
`tensor` is 1; `mesh.tensor` divides it further).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import LOGICAL_RULES, state_shardings

DECODE_RULES: dict[str, tuple[str, ...]] = {**LOGICAL_RULES, "embed": ()}


def decode_param_dtype(config: ModelConfig) -> jnp.dtype:
    """The dtype of the decoding copy: the compute dtype when it is narrower than the storage dtype."""
    compute, stored = jnp.dtype(config.jnp_dtype), jnp.dtype(config.jnp_param_dtype)
    return compute if compute.itemsize < stored.itemsize else stored


def decoding_layout(model: Transformer, mesh: Mesh) -> Transformer:
    """A copy of `model` for decoding on `mesh`: `DECODE_RULES`, `decode_param_dtype`; `model` is unchanged."""
    graphdef, state = nnx.split(model)
    dtype = decode_param_dtype(model.config)
    shardings = state_shardings(state, mesh, DECODE_RULES)
    narrow = jax.jit(lambda s: jax.tree.map(lambda x: x.astype(dtype), s), out_shardings=shardings)
    return nnx.merge(graphdef, narrow(state))
