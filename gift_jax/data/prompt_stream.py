"""A resumable, seeded stream of RL prompts: reshuffled every epoch, split across processes.

The order is a pure function of `(seed, epoch)`, so `{"epoch", "position"}` is the whole state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class PromptStream(Generic[T]):
    """Yields global batches of records; each process keeps rows `process_index::process_count`."""

    def __init__(self, records: Sequence[T], *, seed: int, process_index: int = 0, process_count: int = 1):
        if not records:
            raise ValueError("PromptStream: no records")
        self.records = list(records)
        self.seed = seed
        self.process_index, self.process_count = process_index, process_count
        self.epoch, self.position = 0, 0

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch])).permutation(len(self.records))

    def next_batch(self, global_size: int) -> list[T]:
        """The next `global_size` records of the global order (crossing into the next epoch if needed),
        of which this process returns its share."""
        chosen: list[int] = []
        while len(chosen) < global_size:
            order = self._order(self.epoch)
            take = order[self.position : self.position + global_size - len(chosen)]
            chosen.extend(int(i) for i in take)
            self.position += len(take)
            if self.position >= len(order):
                self.epoch, self.position = self.epoch + 1, 0
        return [self.records[i] for i in chosen[self.process_index :: self.process_count]]

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "num_records": len(self.records), "seed": self.seed}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("num_records") != len(self.records) or state.get("seed") != self.seed:
            raise ValueError(
                f"prompt-stream state {state} does not match {len(self.records)} records / seed {self.seed}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
