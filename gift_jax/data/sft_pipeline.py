"""Grain pipeline over an `SFTSplit`: shuffled, sharded, bucketed, resumable batches.

Order of the data. Each epoch has its own permutation of all N records, drawn from
`(seed, epoch)`, so every process computes the same global order without talking to the others.
A global step takes the next `batch_size * process_count` positions of that order; process p takes
positions `p, p + process_count, ...` of them. The last step of an epoch is filled with padding
rows (all masks zero), so every process yields exactly `steps_per_epoch` batches per epoch and
batches never mix two epochs. The padded length L of a step is the smallest bucket that holds the
longest sample of the *global* step, so all processes build the same `[B, L]` shape for it (a
multi-host global array needs that).

Packing (`pack=True`). Rows then hold several records each: all records are packed once into rows of
`bucket_lengths[-1]` input positions by best-fit decreasing (`gift_jax.data.packing`), and each epoch
is a permutation of those rows, drawn from `(seed, epoch)`, split over steps and processes as above.
Which records share a row does not change the loss (attention and targets stay within each record),
so fixing the rows once costs no randomness that matters and keeps `steps_per_epoch` constant. A
step's length L is the smallest bucket holding its fullest row.

Resumption. The plan above is a pure function of its arguments, so a position in it (the number
of batches read) is the whole iterator state; `get_state()` returns it as a small JSON-friendly dict
for the checkpoint, and `set_state()` continues with exactly the batch that would have come next.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from gift_jax.data.batching import bucket_length, collate_packed_batch, collate_sft_batch, default_bucket_lengths
from gift_jax.data.packing import best_fit_decreasing
from gift_jax.data.sft_split import SFTSplit


@dataclasses.dataclass(frozen=True)
class BatchPlanConfig:
    """What determines the order and shapes of the batches (and must match on resume).

    Attributes:
      batch_size: rows per batch on this process (the global batch is `batch_size * process_count`).
      seed: shuffling seed; None keeps the stored order (evaluation).
      num_epochs: passes over the split.
      process_index, process_count: this process among all data-loading processes
        (`jax.process_index()`, `jax.process_count()` in a multi-host run).
      bucket_lengths: allowed padded input lengths L, ascending.
      pack: several records per row (rows of `bucket_lengths[-1]` input positions).
    """

    batch_size: int
    seed: int | None
    num_epochs: int
    process_index: int
    process_count: int
    bucket_lengths: tuple[int, ...]
    pack: bool = False

    def __post_init__(self):
        if self.batch_size < 1 or self.num_epochs < 1:
            raise ValueError(f"batch_size and num_epochs must be >= 1, got {self.batch_size}, {self.num_epochs}")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} is not in [0, process_count={self.process_count})")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be a non-negative int, got {self.seed}")
        if not self.bucket_lengths or list(self.bucket_lengths) != sorted(set(self.bucket_lengths)):
            raise ValueError(f"bucket_lengths must be non-empty, ascending and distinct, got {self.bucket_lengths}")


class ShardedEpochPlan:
    """Row r of this process's batch stream -> (record index or -1 for padding, padded length L).

    A random-access sequence of `num_epochs * steps_per_epoch * batch_size` slots; row r belongs
    to batch `r // batch_size`. Everything is computed up front (a few int arrays of size
    num_epochs x N), which keeps lookups trivially thread-safe for grain's reader threads.
    """

    def __init__(self, num_tokens: np.ndarray, config: BatchPlanConfig):
        _check_fits(num_tokens, config)
        self.config = config
        self.num_records = len(num_tokens)
        self._records, self._lengths, self.steps_per_epoch = _lay_out_rows(np.asarray(num_tokens) - 1, config)

    @property
    def num_batches(self) -> int:
        return self.config.num_epochs * self.steps_per_epoch

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, slot: int) -> tuple[int, int]:
        return int(self._records[slot]), int(self._lengths[slot])


class PackedEpochPlan(ShardedEpochPlan):
    """Row r of this process's batch stream -> (records packed into it, padded length L).

    The rows (bins of best-fit decreasing over the records' input lengths) are formed once; epochs
    permute them. An empty tuple is a padding row.
    """

    def __init__(self, num_tokens: np.ndarray, config: BatchPlanConfig):
        _check_fits(num_tokens, config)
        inputs = np.asarray(num_tokens) - 1
        self.config = config
        self.num_records = len(num_tokens)
        self._bins = best_fit_decreasing(inputs, config.bucket_lengths[-1])
        fills = np.asarray([int(inputs[b].sum()) for b in self._bins])
        self._records, self._lengths, self.steps_per_epoch = _lay_out_rows(fills, config)

    def __getitem__(self, slot: int) -> tuple[tuple[int, ...], int]:
        row = int(self._records[slot])
        records = () if row < 0 else tuple(int(r) for r in self._bins[row])
        return records, int(self._lengths[slot])


def _check_fits(num_tokens: np.ndarray, config: BatchPlanConfig) -> None:
    if len(num_tokens) == 0:
        raise ValueError("cannot batch an empty split")
    longest_input = int(np.max(num_tokens)) - 1
    if longest_input > config.bucket_lengths[-1]:
        raise ValueError(
            f"record {int(np.argmax(num_tokens))} needs {longest_input} input positions, more than the "
            f"largest bucket length {config.bucket_lengths[-1]}"
        )


def _lay_out_rows(row_lengths: np.ndarray, config: BatchPlanConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-epoch permutations of rows (input lengths `row_lengths`) cut into global steps.

    Returns this process's (row index or -1 per slot, padded length L per slot, steps per epoch).
    """
    num_rows = len(row_lengths)
    global_batch = config.batch_size * config.process_count
    steps_per_epoch = math.ceil(num_rows / global_batch)
    order = np.full((config.num_epochs, steps_per_epoch * global_batch), -1, dtype=np.int64)
    for epoch in range(config.num_epochs):
        order[epoch, :num_rows] = _epoch_order(num_rows, config.seed, epoch)
    input_lengths = np.where(order >= 0, np.asarray(row_lengths)[order], 0)
    step_longest = input_lengths.reshape(config.num_epochs, steps_per_epoch, global_batch).max(axis=-1)
    step_bucket = bucket_length(step_longest, config.bucket_lengths)
    # Global slot step * global_batch + row * process_count + process_index is ours.
    local = order.reshape(config.num_epochs, steps_per_epoch, config.batch_size, config.process_count)
    records = local[..., config.process_index].reshape(-1)
    return records, np.repeat(step_bucket.reshape(-1), config.batch_size), steps_per_epoch


def _epoch_order(num_records: int, seed: int | None, epoch: int) -> np.ndarray:
    """[num_records] permutation for one epoch; the identity when not shuffling."""
    if seed is None:
        return np.arange(num_records)
    return np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(num_records)


class SFTBatchIterator(Iterator[dict[str, np.ndarray]]):
    """Yields the batches of a `ShardedEpochPlan` (see `gift_jax.data.batching` for the contract).

    Attributes:
      steps_per_epoch: batches per epoch (the same on every process).
      num_batches: batches in total over all epochs.
      batches_read: batches returned so far (or restored by `set_state`).
    """

    def __init__(self, split: SFTSplit, plan: ShardedEpochPlan, *, num_threads: int, prefetch_batches: int):
        self._plan = plan
        source, pad_id = split.source, split.pad_id

        def read(record: int) -> tuple[np.ndarray, np.ndarray]:
            sample = source[record]
            return sample["token_ids"], sample["loss_mask"]

        def load(slot: tuple[Any, int]) -> tuple[Any, int]:
            records, length = slot
            if plan.config.pack:
                return [read(r) for r in records], length
            return (None if records < 0 else read(records)), length

        def collate(rows: Sequence[tuple[Any, int]]) -> dict[str, np.ndarray]:
            collate_rows = collate_packed_batch if plan.config.pack else collate_sft_batch
            return collate_rows([sample for sample, _ in rows], rows[0][1], pad_id)

        dataset = grain.MapDataset.source(plan).map(load).batch(plan.config.batch_size, batch_fn=collate)
        read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
        self._iterator = iter(dataset.to_iter_dataset(read_options))
        self.steps_per_epoch = plan.steps_per_epoch
        self.num_batches = plan.num_batches
        self.batches_read = 0

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        self.batches_read += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position, plus the plan settings it is only valid for."""
        return {
            "batches_read": self.batches_read,
            "plan": _plan_signature(self._plan),
            "grain": self._iterator.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a `get_state()` value taken on an iterator with the same plan settings."""
        expected = _plan_signature(self._plan)
        if state.get("plan") != expected:
            raise ValueError(f"iterator state is for plan {state.get('plan')}, but this iterator has plan {expected}")
        self._iterator.set_state(state["grain"])
        self.batches_read = int(state["batches_read"])


def _plan_signature(plan: ShardedEpochPlan) -> dict[str, Any]:
    # num_epochs is left out: each epoch's order depends only on (seed, epoch), so a run may be
    # resumed with more epochs than it started with.
    config = dataclasses.asdict(plan.config)
    # process_index is left out too: orbax saves one JSON copy (process 0's) and every process's
    # position is the same batch count, so all processes restore from it.
    del config["num_epochs"], config["process_index"]
    if not config["pack"]:  # states saved before packing existed have no such key
        del config["pack"]
    config["bucket_lengths"] = list(config["bucket_lengths"])
    config["num_records"] = plan.num_records
    return config


def make_sft_iterator(
    split: SFTSplit,
    *,
    batch_size: int,
    seed: int | None,
    num_epochs: int,
    process_index: int = 0,
    process_count: int = 1,
    bucket_lengths: Sequence[int] | None = None,
    num_threads: int = 2,
    prefetch_batches: int = 4,
    pack: bool = False,
) -> SFTBatchIterator:
    """Training batches: reshuffled every epoch, sharded over processes, padded to buckets.

    Args:
      split: the tokenized samples.
      batch_size: rows per batch on this process.
      seed: shuffling seed (same on every process); None keeps the stored order.
      num_epochs: passes over the split; the iterator ends after the last one.
      process_index, process_count: pass `jax.process_index()`, `jax.process_count()`.
      bucket_lengths: allowed L; default `default_bucket_lengths(split.max_length)`.
      num_threads, prefetch_batches: grain reader threads and batches prepared ahead
        (0 threads reads synchronously).
      pack: several records per row (batches then carry `segment_ids`; see `collate_packed_batch`).
    """
    config = BatchPlanConfig(
        batch_size=batch_size,
        seed=seed,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        bucket_lengths=tuple(bucket_lengths or default_bucket_lengths(split.max_length)),
        pack=pack,
    )
    plan = (PackedEpochPlan if pack else ShardedEpochPlan)(split.num_tokens, config)
    return SFTBatchIterator(split, plan, num_threads=num_threads, prefetch_batches=prefetch_batches)


def make_eval_batches(
    split: SFTSplit,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    bucket_lengths: Sequence[int] | None = None,
    num_threads: int = 2,
    prefetch_batches: int = 4,
    pack: bool = False,
) -> SFTBatchIterator:
    """Validation batches: one pass in stored order; every record appears on exactly one process.

    Padding rows (all-zero masks) fill the last batch, so summing masked losses over all batches
    and processes counts each supervised token once. Call again for each evaluation.
    """
    return make_sft_iterator(
        split,
        batch_size=batch_size,
        seed=None,
        num_epochs=1,
        process_index=process_index,
        process_count=process_count,
        bucket_lengths=bucket_lengths,
        num_threads=num_threads,
        prefetch_batches=prefetch_batches,
        pack=pack,
    )
