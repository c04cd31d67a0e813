"""What scoring a batch returns: per-item scores and statuses, and the failure counts."""

import enum
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# Rewards are 1.0 (correct) or 0.0; "correct" is read with one threshold everywhere (evaluation
# accuracy, RL accuracy, all-correct groups), halfway so float noise cannot flip it.
CORRECT_THRESHOLD = 0.5


def is_correct(rewards) -> np.ndarray:
    """`[...]` bool: which rewards count as a correct answer (`reward > CORRECT_THRESHOLD`)."""
    return np.asarray(rewards) > CORRECT_THRESHOLD


class ItemStatus(enum.Enum):
    """How an item's score was decided. Only OK scores reflect the answer; the others are 0."""

    OK = "ok"
    TIMED_OUT = "timed_out"  # its check ran past the per-item (or batch) time limit
    CRASHED = "crashed"  # its worker died or its check raised
    BAD_GROUND_TRUTH = "bad_ground_truth"  # its ground truth cannot be scored (readers refuse these earlier)


class BatchScores(NamedTuple):
    """Scores of a batch of N responses.

    scores: [N] float32, 1.0 for a correct answer and 0.0 otherwise (also for failed items).
    statuses: N ItemStatus values, in input order.
    timed_out, crashed, bad_ground_truth: how many items have each failing status.
    """

    scores: np.ndarray
    statuses: tuple[ItemStatus, ...]
    timed_out: int
    crashed: int
    bad_ground_truth: int = 0

    @classmethod
    def from_items(cls, correct: Sequence[bool], statuses: Sequence[ItemStatus]) -> "BatchScores":
        """Build from per-item correctness and status; a failed item scores 0 whatever `correct` says."""
        statuses = tuple(statuses)
        pairs = zip(correct, statuses, strict=True)
        scores = [float(ok and status is ItemStatus.OK) for ok, status in pairs]
        return cls(
            scores=np.array(scores, dtype=np.float32),
            statuses=statuses,
            timed_out=statuses.count(ItemStatus.TIMED_OUT),
            crashed=statuses.count(ItemStatus.CRASHED),
            bad_ground_truth=statuses.count(ItemStatus.BAD_GROUND_TRUTH),
        )
