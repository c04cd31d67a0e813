"""The SFT batch contract: right-padded numpy arrays at a few bucket lengths.

A batch is a dict of `[B, L]` arrays:
- `input_ids` int32: tokens 0..T-2 of each sample, then `pad_id`.
- `target_ids` int32: tokens 1..T-1 (the next token of each input position), then `pad_id`.
- `loss_mask` float32: 1 where `target_ids` is a supervised (response or EOS) token.
- `attention_mask` int32: 1 on the T-1 real input tokens.
- `positions` int32: 0..L-1 on every row (right padding keeps real tokens at 0..T-2).
Rows that only fill up a batch (no sample) have all-zero masks. `L` is taken from a short list of
bucket lengths so a jitted step compiles once per bucket, not once per batch.

Packed batches (`collate_packed_batch`) hold several samples per row, one after the other, and add
- `segment_ids` int32: k on the input positions of the row's k-th sample (1-based), 0 on padding;
with `positions` restarting at 0 for every sample (0 on padding) and `attention_mask` = segment > 0.
Each sample's targets and loss mask are its own, so no position predicts the next sample's token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BATCH_KEYS = ("input_ids", "target_ids", "loss_mask", "attention_mask", "positions")
PACKED_BATCH_KEYS = (*BATCH_KEYS, "segment_ids")


def default_bucket_lengths(max_length: int, smallest: int = 128) -> tuple[int, ...]:
    """Powers of two from `smallest` below `max_length`, then `max_length` itself.

    A sample of at most `max_length` tokens has at most `max_length - 1` input positions, so the
    last bucket always fits.
    """
    if max_length < 1 or smallest < 1:
        raise ValueError(f"max_length and smallest must be positive, got {max_length}, {smallest}")
    buckets = []
    length = smallest
    while length < max_length:
        buckets.append(length)
        length *= 2
    return (*buckets, max_length)


def bucket_length(num_inputs: int | np.ndarray, bucket_lengths: Sequence[int]) -> int | np.ndarray:
    """Smallest bucket that holds `num_inputs` positions, elementwise for an array.

    `bucket_lengths` must be sorted ascending.
    """
    buckets = np.asarray(bucket_lengths)
    longest = int(np.max(num_inputs))
    if longest > buckets[-1]:
        raise ValueError(f"{longest} input positions exceed the largest bucket length {buckets[-1]}")
    lengths = buckets[np.searchsorted(buckets, num_inputs)]
    return int(lengths) if np.ndim(lengths) == 0 else lengths


def collate_sft_batch(
    samples: Sequence[tuple[np.ndarray, np.ndarray] | None], length: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Stacks samples into one right-padded batch of the contract above.

    Args:
      samples: per row either (token_ids [T] int, loss_mask [T] bool) with `T - 1 <= length`,
        or None for a padding row.
      length: L, the padded input length of the batch.
      pad_id: token id written into padded positions.

    Returns:
      dict of `BATCH_KEYS` -> [len(samples), length] arrays.
    """
    batch = _empty_batch(len(samples), length, pad_id)
    for row, sample in enumerate(samples):
        if sample is not None:
            _write_sample(batch, row, 0, sample, length)
    batch["positions"] = np.broadcast_to(np.arange(length, dtype=np.int32), (len(samples), length)).copy()
    return batch


def collate_packed_batch(
    rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], length: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Packs each row's samples one after the other into a `[len(rows), length]` batch.

    Args:
      rows: per row a (possibly empty) list of (token_ids [T] int, loss_mask [T] bool); a row's
        samples need `sum(T - 1) <= length` input positions.
      length: L, the padded input length of the batch.
      pad_id: token id written into padded positions.

    Returns:
      dict of `PACKED_BATCH_KEYS` -> [len(rows), length] arrays (see the module docstring).
    """
    batch = _empty_batch(len(rows), length, pad_id)
    batch["positions"] = np.zeros((len(rows), length), dtype=np.int32)
    batch["segment_ids"] = np.zeros((len(rows), length), dtype=np.int32)
    for row, samples in enumerate(rows):
        start = 0
        for segment, sample in enumerate(samples, start=1):
            end = _write_sample(batch, row, start, sample, length)
            batch["segment_ids"][row, start:end] = segment
            batch["positions"][row, start:end] = np.arange(end - start)
            start = end
    return batch


def _empty_batch(batch_size: int, length: int, pad_id: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.full((batch_size, length), pad_id, dtype=np.int32),
        "target_ids": np.full((batch_size, length), pad_id, dtype=np.int32),
        "loss_mask": np.zeros((batch_size, length), dtype=np.float32),
        "attention_mask": np.zeros((batch_size, length), dtype=np.int32),
    }


def _write_sample(batch, row: int, start: int, sample, length: int) -> int:
    """Writes one sample's inputs / targets / mask into `row` from position `start`; returns its end."""
    token_ids, sample_mask = sample
    end = start + len(token_ids) - 1
    if end > length:
        after = f" after {start} positions of earlier samples" if start else ""
        raise ValueError(f"batch row {row}: {len(token_ids)} tokens do not fit input length {length}{after}")
    batch["input_ids"][row, start:end] = token_ids[:-1]
    batch["target_ids"][row, start:end] = token_ids[1:]
    # The mask marks supervised *tokens*; position t predicts token t+1, so shift it with them.
    batch["loss_mask"][row, start:end] = sample_mask[1:]
    batch["attention_mask"][row, start:end] = 1
    return end
