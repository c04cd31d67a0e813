"""Accelerator targets of the compile-only fit check: TPU slices by name, or the local backend.

A TPU target needs libtpu importable (the `tpu` extra); no TPU has to be attached: jax's
`get_topology_desc` returns abstract devices that a mesh can be built on and compiled for.
Names follow Cloud TPU accelerator types: `v4-N` and `v5p-N` count TensorCores (2 per chip),
`v5e-N` and `v6e-N` count chips.
"""

from __future__ import annotations

import dataclasses
import os

import jax

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Topology:
    """One TPU slice: jax's topology name and chip config, and the HBM the compiler may use per chip."""

    name: str
    topology_name: str  # e.g. "v5:2x4x4" (chips along x, y, z)
    chip_config_name: str  # "megacore" (v4 / v5p: one device per chip) or "default"
    hbm_bytes_per_chip: int  # the compiler's per-chip HBM limit (what RESOURCE_EXHAUSTED reports)

    @property
    def chips(self) -> int:
        dims = self.topology_name.split(":")[1].split("x")
        n = 1
        for d in dims:
            n *= int(d)
        return n


# HBM: the per-chip capacity the TPU compiler reports in its out-of-memory errors (a little below
# the datasheet's 32 / 16 / 95 / 32 GB).
_HBM = {"v4": int(30.75 * GIB), "v5e": int(15.75 * GIB), "v5p": int(95.74 * GIB), "v6e": int(31.25 * GIB)}
_SHAPES = {
    "v4": ("v4", "megacore", {8: "2x2x1", 16: "2x2x2", 32: "2x2x4"}),
    "v5p": ("v5", "megacore", {8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4"}),
    "v5e": ("v5e", "default", {8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8"}),
    "v6e": ("v6e", "default", {8: "2x4", 16: "4x4", 32: "4x8"}),
}
TOPOLOGIES: dict[str, Topology] = {
    f"{family}-{size}": Topology(f"{family}-{size}", f"{prefix}:{shape}", chip_config, _HBM[family])
    for family, (prefix, chip_config, shapes) in _SHAPES.items()
    for size, shape in shapes.items()
}
LOCAL = "local"


def topology_devices(name: str) -> list:
    """The devices to compile for: abstract TPU devices of `name`, or `jax.devices()` for "local"."""
    if name == LOCAL:
        return jax.devices()
    topology = TOPOLOGIES.get(name)
    if topology is None:
        raise ValueError(f"unknown topology {name!r}; known: {LOCAL}, {', '.join(TOPOLOGIES)}")
    try:
        import libtpu  # noqa: F401  (only to give a clear error: jax loads it itself)
    except ImportError:
        raise RuntimeError(
            f"topology {name}: compiling for TPU needs libtpu (pip install -e '.[tpu]', or libtpu on PYTHONPATH)"
        ) from None
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(
        platform="tpu",
        topology_name=topology.topology_name,
        chip_config_name=topology.chip_config_name,
        chips_per_host_bounds=(2, 2, 1),
        num_slices=1,
        wrap=(False, False, False),
    )
    return list(desc.devices)


def hbm_bytes_per_chip(name: str, devices) -> int | None:
    """The memory one device may use: the table's HBM for TPU targets; for "local", the device's
    reported limit (GPU / TPU) or the host's RAM (CPU)."""
    if name != LOCAL:
        return TOPOLOGIES[name].hbm_bytes_per_chip
    stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
