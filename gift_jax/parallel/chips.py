"""Accelerator chips by their datasheet figures, for roofline estimates (`gift_jax.rollout.roofline`).

Per chip: peak dense bf16 FLOP/s, HBM capacity and bandwidth, and the bidirectional bandwidth of its
chip-to-chip links (TPU ICI, NVIDIA NVLink). Sources: the Cloud TPU system-architecture pages
(v4, v5e, v5p, v6e) and NVIDIA's H100 / H200 datasheets (dense figures, i.e. without sparsity).
A chip is found by the `device_kind` jax reports for it (the same on abstract topology devices).
"""

from __future__ import annotations

import dataclasses

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_bf16_flops: float  # FLOP/s, dense
    hbm_bytes_per_s: float
    link_bytes_per_s: float  # bidirectional chip-to-chip (ICI / NVLink) per chip
    hbm_bytes: float
    source: str


CHIPS: dict[str, Chip] = {
    chip.name: chip
    for chip in (
        Chip("TPU v4", 275e12, 1228 * GB, 300 * GB, 32 * 2**30, "cloud.google.com/tpu/docs/v4"),
        Chip("TPU v5 lite", 197e12, 819 * GB, 400 * GB, 16 * GB, "cloud.google.com/tpu/docs/v5e"),
        Chip("TPU v5", 459e12, 2765 * GB, 1200 * GB, 95 * 2**30, "cloud.google.com/tpu/docs/v5p"),
        Chip("TPU v6 lite", 918e12, 1638 * GB, 800 * GB, 32 * GB, "cloud.google.com/tpu/docs/v6e"),
        Chip("NVIDIA H100", 989e12, 3350 * GB, 900 * GB, 80 * GB, "NVIDIA H100 SXM datasheet"),
        Chip("NVIDIA H200", 989e12, 4800 * GB, 900 * GB, 141 * GB, "NVIDIA H200 SXM datasheet"),
    )
}
# Cloud TPU names of the same chips (`v5p-64` is 32 "TPU v5" chips).
FAMILIES = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite", "h100": "NVIDIA H100"}
FAMILIES["h200"] = "NVIDIA H200"


def chip_for(device_kind: str) -> Chip | None:
    """The chip of a jax `device_kind` ("TPU v5", "NVIDIA H200", "NVIDIA H100 80GB HBM3", ...), or None."""
    if device_kind in CHIPS:
        return CHIPS[device_kind]
    for name, chip in CHIPS.items():
        if name.startswith("NVIDIA") and device_kind.startswith(name):
            return chip
    return None
