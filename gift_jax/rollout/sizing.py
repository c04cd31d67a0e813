"""`max_concurrent_rows="auto"`: the slots and the page pool of a rollout, sized from the device memory
left after what stays resident (the training state, the frozen base, the decoding copy of the weights).

Per device (the slots and the pool are split over the decode mesh's batch axes; a row's keys and values
over its `tensor` axis, when it divides the kv heads):

- usable = free - `HBM_MARGIN` x HBM (compiler temporaries, fragmentation, what the estimate misses)
  - the decode step's per-slot workspace (the float32 logits and their softmax, `V` wide) x slots;
- the pool: usable // (page_size x KV bytes per position), one page of it scratch;
- the slots: every row of the device's share when the pool holds them at `ROW_SHARE` of their longest
  length (prompt + budget), else as many as it holds at that share. Rows outgrowing the pool are
  preempted and redone (`engine`), so the share trades memory for occasional recomputation; 0.5 fits
  the paper's rollouts (mean length ~3k of an 8,192 budget, 5% at the budget) with room to spare.

Free memory is read from the devices at run time (`free_device_bytes`: the smallest `bytes_limit -
bytes_in_use` over the devices of all processes) or given by the compile-only fit check for a target
(its HBM minus the resident state). A device that reports no memory (CPU) keeps the fixed rule
`slots_for_budget` with a pool that holds every slot's longest row.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from gift_jax.models import ModelConfig

HBM_MARGIN = 0.10  # of a device's HBM, kept free besides the estimate
ROW_SHARE = 0.5  # a slot is budgeted this share of its longest row's positions
LOGITS_COPIES = 4  # float32 `[V]` vectors per slot the decode step holds at once (logits, softmax, draw)


def kv_heads_per_device(model_config: ModelConfig, tensor: int) -> int:
    """Kv heads one device holds of each row: split over `tensor` when it divides them (`paged_attention`)."""
    heads = model_config.num_kv_heads
    return heads // tensor if tensor > 1 and heads % tensor == 0 else heads


def kv_bytes_per_position(model_config: ModelConfig, cache_dtype, tensor: int = 1) -> int:
    """Bytes of keys and values one cached position of one row takes on one device (all layers)."""
    per_head = 2 * model_config.head_dim * jnp.dtype(cache_dtype).itemsize
    return model_config.num_layers * kv_heads_per_device(model_config, tensor) * per_head


@dataclasses.dataclass(frozen=True)
class CacheSize:
    """What `size_cache` chose, per device (one batch block of the decode mesh) unless said otherwise."""

    slots: int  # over all devices
    slots_per_device: int
    pages_per_device: int  # scratch included
    page_size: int
    free_bytes: int  # per device, before the margin
    pool_bytes: int  # per device
    kv_bytes_per_position: int  # per device

    def report(self) -> dict:
        return dataclasses.asdict(self)


def size_cache(
    model_config: ModelConfig,
    *,
    rows: int,
    longest_row: int,
    page_size: int,
    cache_dtype,
    free_bytes: int,
    hbm_bytes: int,
    blocks: int = 1,
    tensor: int = 1,
) -> CacheSize:
    """Slots and pool for `rows` request rows of up to `longest_row` positions (see the module docstring).

    free_bytes / hbm_bytes: per device. blocks: the devices the slots are split over (the decode mesh's
    batch parallelism); tensor: the mesh's tensor axis.
    """
    per_position = kv_bytes_per_position(model_config, cache_dtype, tensor)
    page_bytes = page_size * per_position
    rows_per_device = -(-rows // blocks)
    workspace = LOGITS_COPIES * model_config.vocab_size * 4
    usable = free_bytes - HBM_MARGIN * hbm_bytes
    pages_for_row = -(-longest_row // page_size)
    slots = rows_per_device
    while slots > 1 and (usable - slots * workspace) // page_bytes - 1 < math.ceil(slots * ROW_SHARE * pages_for_row):
        slots -= 1
    pages = int((usable - slots * workspace) // page_bytes)
    if pages - 2 < pages_for_row:  # scratch and the prompt's template page (`admission`) besides
        raise ValueError(
            f"rollout: {free_bytes / 2**30:.2f} GiB free per device (margin {HBM_MARGIN:.0%} of "
            f"{hbm_bytes / 2**30:.2f} GiB) cannot hold one row of {longest_row} positions "
            f"({per_position} bytes each); give the rollout more memory or fewer positions"
        )
    return CacheSize(
        slots=slots * blocks,
        slots_per_device=slots,
        pages_per_device=pages,
        page_size=page_size,
        free_bytes=int(free_bytes),
        pool_bytes=int(pages * page_bytes),
        kv_bytes_per_position=per_position,
    )


def free_device_bytes(devices) -> tuple[int, int] | None:
    """`(free, limit)` bytes of the fullest of `devices` (this process's), the same on every process
    (the smallest over all of them), or None when a device reports no memory (CPU)."""
    stats = [d.memory_stats() for d in devices]
    if any(not s or not s.get("bytes_limit") for s in stats):
        return None
    free = min(s["bytes_limit"] - s.get("bytes_in_use", 0) for s in stats)
    limit = min(s["bytes_limit"] for s in stats)
    local = np.array([free, limit], np.int64)
    if jax.process_count() > 1:
        local = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, 2).min(axis=0)
    return int(local[0]), int(local[1])
