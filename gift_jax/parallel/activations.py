"""Sharding constraints on activations, by logical axis names, for FSDP that shards the batch.

Without them GSPMD follows the weights: with `fsdp` splitting every kernel's embedding dimension it
splits the matmuls along `d` and all-reduces full-batch activations (tensor-parallel traffic for
every matmul, and per-chip memory that grows with the number of chips). Pinning the activations to
the batch axes makes it gather each weight where a layer uses it and reduce-scatter its gradient
instead, as FSDP / ZeRO-3 intends; `tensor` still splits heads, MLP width and vocabulary.

The constraints apply inside `activation_sharding(mesh)` (the jitted steps enter it) and are no-ops
elsewhere, so model code stays usable without a mesh.
"""

from __future__ import annotations

import contextlib

import jax

from gift_jax.parallel.sharding import LOGICAL_RULES, logical_axes_for, logical_to_spec, path_to_str

# Activation dimension -> logical axis of `LOGICAL_RULES`. The embedding dimension of activations is
# *not* split over `fsdp` (that is the weights' rule): the batch is.
BATCH, LENGTH, EMBED, HEADS, KV_HEADS, MLP_WIDTH, VOCAB = "batch", None, None, "heads", "kv_heads", "mlp", "vocab"


def activation_sharding(mesh):
    """Context in which `constrain` / `constrain_like_params` apply (over `mesh`'s axes).

    Usable inside a traced function: it sets the abstract mesh only."""
    if mesh is None:
        return contextlib.nullcontext()
    return jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def _mesh():
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
    """`x` constrained to the mesh axes of its dimensions' logical names (None: not split).

    A mesh axis that does not divide a dimension is dropped for it (so tiny models run on any mesh)."""
    mesh = _mesh()
    if mesh is None or x is None:
        return x
    if len(logical_axes) != x.ndim:
        raise ValueError(f"constrain: {len(logical_axes)} axis names {logical_axes} for an array of shape {x.shape}")
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, x.shape, mesh, LOGICAL_RULES))


def constrain_batch(tree):
    """Every leaf `[B, ...]` of a pytree split over the batch axes on its leading dimension."""
    return jax.tree.map(lambda x: constrain(x, (BATCH,) + (None,) * (x.ndim - 1)), tree)


def constrain_like_params(tree):
    """A pytree with the structure of the parameters' `nnx.State` (gradients, their f32 accumulator)
    constrained to the parameters' own shardings (so an accumulator is reduce-scattered, never whole)."""
    mesh = _mesh()
    if mesh is None:
        return tree

    def one(path, x):
        spec = logical_to_spec(logical_axes_for(path_to_str(path)), x.shape, mesh, LOGICAL_RULES)
        return jax.lax.with_sharding_constraint(x, spec)

    return jax.tree_util.tree_map_with_path(one, tree)


def constrain_stacked_params(tree):
    """One layer's parameter `State` stacked `[L, ...]` over layers (paths as inside a layer, e.g.
    `mlp/up_proj/kernel`): each leaf keeps its parameter sharding, the layer axis unsplit."""
    mesh = _mesh()
    if mesh is None:
        return tree

    def one(path, x):
        axes = (None, *logical_axes_for(path_to_str(path)))
        return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, x.shape, mesh, LOGICAL_RULES))

    return jax.tree_util.tree_map_with_path(one, tree)


__all__ = [
    "BATCH",
    "EMBED",
    "HEADS",
    "KV_HEADS",
    "LENGTH",
    "MLP_WIDTH",
    "VOCAB",
    "activation_sharding",
    "constrain",
    "constrain_batch",
    "constrain_like_params",
    "constrain_stacked_params",
]
