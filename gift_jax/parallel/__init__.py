"""Device mesh, logical-axis sharding rules and batch placement."""

from gift_jax.parallel.mesh import BATCH_AXES, MESH_AXES, MeshConfig, batch_parallelism, make_mesh
from gift_jax.parallel.sharding import (
    LOGICAL_RULES,
    batch_sharding,
    fetch_global,
    logical_to_spec,
    place_global_batch,
    replicated,
    shard_batch,
    shard_model,
    state_shardings,
)

__all__ = [
    "BATCH_AXES",
    "LOGICAL_RULES",
    "MESH_AXES",
    "MeshConfig",
    "batch_parallelism",
    "batch_sharding",
    "fetch_global",
    "logical_to_spec",
    "make_mesh",
    "place_global_batch",
    "replicated",
    "shard_batch",
    "shard_model",
    "state_shardings",
]
