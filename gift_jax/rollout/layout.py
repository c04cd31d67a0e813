"""The weights' layout for decoding: a decode mesh of its own, the compute dtype, replicated over the
batch axes, tensor-parallel over `tensor`.

Training shards every weight over `fsdp` (`LOGICAL_RULES["embed"]`); a decode step under that layout
all-gathers every weight for every generated token. Before a rollout phase the policy is copied once
into `DECODE_RULES` (the same rules without `fsdp`) on the *decode mesh*: the same devices as the
training mesh, reshaped to `(data 1, fsdp N / t, tensor t)` (`decode_mesh`), so each chip holds 1/t of
the weights and of every row's kv heads whatever the training mesh's `tensor` is (a pure-FSDP training
mesh would otherwise decode with every chip reading the whole model per token). A decode step then
only needs the tensor-parallel collectives of its activations; the training-layout parameters are left
untouched and the copy is dropped when the rollout phase ends (the training layout is therefore
"restored" at no cost).

That copy is stored in the compute dtype (`decode_param_dtype`): the forward pass casts every
weight to the compute dtype before using it anyway, so a bf16 copy of f32 master weights decodes
exactly the same tokens with half the memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh

from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import LOGICAL_RULES, MESH_AXES, state_shardings
from gift_jax.parallel.sharding import logical_axes_for, path_to_str

DECODE_RULES: dict[str, tuple[str, ...]] = {**LOGICAL_RULES, "embed": ()}


def decode_param_dtype(config: ModelConfig) -> jnp.dtype:
    """The dtype of the decoding copy: the compute dtype when it is narrower than the storage dtype."""
    compute, stored = jnp.dtype(config.jnp_dtype), jnp.dtype(config.jnp_param_dtype)
    return compute if compute.itemsize < stored.itemsize else stored


def decode_tensor_choices(model_config: ModelConfig, chips: int) -> list[int]:
    """Tensor sizes a decode mesh over `chips` may take: divisors of both the chips and the kv heads."""
    return [t for t in range(1, model_config.num_kv_heads + 1) if model_config.num_kv_heads % t == 0 and chips % t == 0]


def decode_mesh(mesh: Mesh, tensor: int) -> Mesh:
    """The devices of `mesh` as `(data 1, fsdp N / tensor, tensor)` (the mesh itself when it already is)."""
    n = mesh.devices.size
    if n % tensor:
        raise ValueError(f"decode mesh: tensor {tensor} does not divide the {n} devices")
    shape = (1, n // tensor, tensor)
    if tuple(mesh.shape[a] for a in MESH_AXES) == shape:
        return mesh
    devices = np.asarray(mesh.devices).reshape(-1)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=list(devices))


def decoding_layout(model: Transformer, mesh: Mesh) -> Transformer:
    """A copy of `model` for decoding on `mesh` (e.g. a `decode_mesh`, over the same devices as the
    model's): `DECODE_RULES`, `decode_param_dtype`; `model` is unchanged."""
    graphdef, state = nnx.split(model)
    dtype = decode_param_dtype(model.config)
    narrow = jax.jit(lambda s: jax.tree.map(lambda x: x.astype(dtype), s))
    return nnx.merge(graphdef, jax.device_put(narrow(state), state_shardings(state, mesh, DECODE_RULES)))


def decode_weight_bytes(model_config: ModelConfig, tensor: int) -> tuple[int, int]:
    """`(held, read)` bytes per chip of the decoding copy on a decode mesh with `tensor` (analytic, from the
    parameter shapes and `DECODE_RULES`): `held` all of it, `read` what a decode step reads (all but
    the untied embedding table, of which it reads only the rows of its tokens)."""
    abstract = nnx.eval_shape(lambda: Transformer(model_config, rngs=nnx.Rngs(0)))
    itemsize = jnp.dtype(decode_param_dtype(model_config)).itemsize
    held = read = 0
    for path, leaf in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        name = path_to_str(path)
        split = [
            dim for axis, dim in zip(logical_axes_for(name), leaf.shape) if "tensor" in DECODE_RULES.get(axis or "", ())
        ]
        size = int(np.prod(leaf.shape)) * itemsize // (tensor if split and split[0] % tensor == 0 else 1)
        held += size
        if not (name.endswith("embed_tokens/embedding") and not model_config.tie_word_embeddings):
            read += size
    return held, read
