"""Sequence packing: several SFT examples per batch row instead of one example plus padding.

Examples are assigned to rows of a fixed capacity (input positions) by best-fit decreasing: longest
first, each into the row whose free space is the smallest that still holds it. On the long-tailed
lengths of reasoning traces this fills rows almost completely (see `experiments/bench_packing.py`).
The batch side (segment ids, per-example positions) is `gift_jax.data.batching.collate_packed_batch`;
the model keeps attention inside each example (`Transformer.hidden_states(..., segment_ids=...)`).
"""

from __future__ import annotations

import numpy as np


def best_fit_decreasing(lengths, capacity: int) -> list[np.ndarray]:
    """Packs items of `lengths` into bins of `capacity` -> list of index arrays, one per bin.

    Deterministic: items are taken longest first (ties by index), and among bins with the same
    free space the most recently opened one is used. O(n x capacity / 64) on a boolean table of
    free-space values, fine for ~1e5 items and capacities of a few thousand.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    too_long = np.flatnonzero((lengths > capacity) | (lengths < 0))
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(f"item {i} has length {int(lengths[i])}, outside [0, capacity={capacity}]")
    bins: list[list[int]] = []
    by_free: dict[int, list[int]] = {}  # free space -> bins with exactly that much left
    has_free = np.zeros(capacity + 1, dtype=bool)  # has_free[s]: some bin has s free
    for item in np.argsort(-lengths, kind="stable"):
        need = int(lengths[item])
        offset = int(np.argmax(has_free[need:]))
        free = need + offset
        if has_free[free]:
            bin_id = by_free[free].pop()
            if not by_free[free]:
                has_free[free] = False
        else:  # nothing fits: open a new bin
            bin_id, free = len(bins), capacity
            bins.append([])
        bins[bin_id].append(int(item))
        left = free - need
        by_free.setdefault(left, []).append(bin_id)
        has_free[left] = True
    return [np.asarray(b, dtype=np.int64) for b in bins]


def fill_fraction(lengths, bins: list[np.ndarray], row_length: int) -> float:
    """Share of the `len(bins) x row_length` positions that hold real tokens."""
    lengths = np.asarray(lengths)
    return float(sum(int(lengths[b].sum()) for b in bins)) / max(len(bins) * row_length, 1)
