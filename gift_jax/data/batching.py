"""The SFT batch contract: right-padded numpy arrays at a few bucket lengths.

A batch is a dict of `[B, L]` arrays:
- `input_ids` int32: tokens 0..T-2 of each sample, then `pad_id`.
- `target_ids` int32: tokens 1..T-1 (the next token of each input position), then `pad_id`.
- `loss_mask` float32: 1 where `target_ids` is a supervised (response or EOS) token.
- `attention_mask` int32: 1 on the T-1 real input tokens.
- `positions` int32: 0..L-1 on every row (right padding keeps real tokens at 0..T-2).
Rows that only fill up a batch (no sample) have all-zero masks. `L` is taken from a short list of
bucket lengths so a jitted step compiles once per bucket, not once per batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BATCH_KEYS = ("input_ids", "target_ids", "loss_mask", "attention_mask", "positions")


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
    batch_size = len(samples)
    input_ids = np.full((batch_size, length), pad_id, dtype=np.int32)
    target_ids = np.full((batch_size, length), pad_id, dtype=np.int32)
    loss_mask = np.zeros((batch_size, length), dtype=np.float32)
    attention_mask = np.zeros((batch_size, length), dtype=np.int32)
    for row, sample in enumerate(samples):
        if sample is None:
            continue
        token_ids, sample_mask = sample
        num_inputs = len(token_ids) - 1
        if num_inputs > length:
            raise ValueError(f"batch row {row}: {len(token_ids)} tokens do not fit input length {length}")
        input_ids[row, :num_inputs] = token_ids[:-1]
        target_ids[row, :num_inputs] = token_ids[1:]
        # The mask marks supervised *tokens*; position t predicts token t+1, so shift it with them.
        loss_mask[row, :num_inputs] = sample_mask[1:]
        attention_mask[row, :num_inputs] = 1
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), (batch_size, length)).copy()
    return {
        "input_ids": input_ids,
        "target_ids": target_ids,
        "loss_mask": loss_mask,
        "attention_mask": attention_mask,
        "positions": positions,
    }
