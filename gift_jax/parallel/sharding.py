"""Logical-axis sharding rules: parameter and activation dimensions -> mesh axes.

A parameter's logical axes come from a regex table over its path (`layers/3/mlp/up_proj/kernel`);
`LOGICAL_RULES` maps logical names to mesh axes. A mesh axis that does not divide a dimension is
dropped for that dimension (replicated), so tiny test models run on any mesh.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gift_jax.parallel.mesh import BATCH_AXES

LOGICAL_RULES: dict[str, tuple[str, ...]] = {
    "batch": BATCH_AXES,
    "embed": ("fsdp",),
    "vocab": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "norm": (),
}

# (regex on the "/"-joined parameter path, logical axes of the array's dimensions); first match wins.
PARAM_LOGICAL_AXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"embed_tokens/embedding$", ("vocab", "embed")),
    (r"q_proj/kernel$", ("embed", "heads")),
    (r"(k|v)_proj/kernel$", ("embed", "kv_heads")),
    (r"q_proj/bias$", ("heads",)),
    (r"(k|v)_proj/bias$", ("kv_heads",)),
    (r"o_proj/kernel$", ("heads", "embed")),
    (r"(gate|up)_proj/kernel$", ("embed", "mlp")),
    (r"down_proj/kernel$", ("mlp", "embed")),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"(layernorm|norm)/weight$", ("norm",)),
)


def path_to_str(path) -> str:
    """`('layers', 0, 'mlp', 'up_proj', 'kernel')` or jax key paths -> `layers/0/mlp/up_proj/kernel`."""
    parts = []
    for p in path:
        p = getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))
        if p != "value":  # nnx.Variable's own pytree child
            parts.append(str(p))
    return "/".join(parts)


def logical_axes_for(path: str) -> tuple[str, ...]:
    for pattern, axes in PARAM_LOGICAL_AXES:
        if re.search(pattern, path):
            return axes
    raise KeyError(f"no sharding rule for parameter {path!r}; add one to PARAM_LOGICAL_AXES")


def logical_to_spec(logical_axes, shape, mesh: Mesh, rules=LOGICAL_RULES) -> P:
    """PartitionSpec for an array, keeping only mesh axes that divide the dimension and are unused."""
    used: set[str] = set()
    spec = []
    for name, dim in zip(logical_axes, shape):
        kept = []
        for axis in rules.get(name, ()) if name else ():
            size = int(np.prod([mesh.shape[a] for a in kept + [axis]]))
            if axis not in used and mesh.shape[axis] > 1 and dim % size == 0:
                kept.append(axis)
        used.update(kept)
        spec.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return P(*spec)


def state_shardings(state, mesh: Mesh, rules=LOGICAL_RULES):
    """A pytree of `NamedSharding`s with the structure of an nnx `State` (arrays or abstract)."""

    def one(path, leaf):
        return NamedSharding(mesh, logical_to_spec(logical_axes_for(path_to_str(path)), leaf.shape, mesh, rules))

    return jax.tree_util.tree_map_with_path(one, state)


def shard_model(model: nnx.Module, mesh: Mesh, rules=LOGICAL_RULES) -> nnx.Module:
    """Moves the model's parameters onto `mesh` in place according to the rules; returns it."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh, rules)))
    return model


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) dimension over the batch axes, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def shard_batch(batch, mesh: Mesh):
    """Places a pytree of host arrays (this process's rows) as global arrays split on the batch axes.

    On one process the arrays are the whole batch; on several, each process passes its own rows
    (`jax.make_array_from_process_local_data` assembles the global array without gathering).
    """

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree_util.tree_map(one, batch)


def place_global_batch(batch, mesh: Mesh):
    """Places a pytree of host arrays holding the *whole* batch (the same on every process) on the mesh.

    For loops whose host data is global by construction (RL: every process draws the same prompts
    and scores the same gathered rollouts): each process copies in only the rows its own devices
    hold. On one process this is `shard_batch`.
    """

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim), lambda index: x[index])

    return jax.tree_util.tree_map(one, batch)


def fetch_global(tree):
    """Host numpy copies of (possibly multi-process) global arrays: the whole arrays, on every process."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:  # always so on one process
            return jax.device_get(x)  # already whole here (gathering it would stack one copy per process)
        return multihost_utils.process_allgather(x, tiled=True)

    return jax.tree_util.tree_map(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
