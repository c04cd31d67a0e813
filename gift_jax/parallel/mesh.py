"""Device mesh with named axes `("data", "fsdp", "tensor")`.

- `data`:   pure data parallelism (parameters replicated across it).
- `fsdp`:   data parallelism with parameters and optimizer state sharded across it (ZeRO-3 style);
            XLA all-gathers each weight where it is used.
- `tensor`: Megatron-style model parallelism over heads / MLP width / vocabulary.

How it maps to hardware: on a TPU pod slice (e.g. v5p-64 = 32 chips over 8 hosts) use
`fsdp=-1` (all chips) for 7-8B models, or `data=<hosts>, fsdp=-1` to keep parameter all-gathers inside
a host's ICI neighbourhood; `jax.make_mesh` orders devices by physical topology. On one 8-GPU host use
`fsdp=8`, or `fsdp=4, tensor=2` when activations dominate; across GPU hosts keep `tensor` within a
host (NVLink) and put hosts on `data` / `fsdp`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # mesh axes the batch dimension is split over


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Axis sizes; exactly one may be -1, meaning "all remaining devices"."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """The concrete `(data, fsdp, tensor)` shape for `num_devices`, or a clear ValueError."""
        sizes = [self.data, self.fsdp, self.tensor]
        wildcard = [i for i, s in enumerate(sizes) if s == -1]
        if len(wildcard) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"mesh {self}: each axis must be a positive size, at most one may be -1")
        known = math.prod(s for s in sizes if s != -1)
        if wildcard:
            if num_devices % known:
                raise ValueError(f"mesh {self}: {num_devices} devices are not divisible by {known}")
            sizes[wildcard[0]] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(f"mesh {self} needs {math.prod(sizes)} devices but {num_devices} are available")
        return tuple(sizes)


def make_mesh(config: MeshConfig = MeshConfig(), devices=None) -> Mesh:
    """A GSPMD (`AxisType.Auto`) mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = config.resolve(len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def batch_parallelism(mesh: Mesh) -> int:
    """How many ways the batch dimension is split (product of the batch axes' sizes)."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)
