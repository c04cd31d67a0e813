"""Scoring batches of responses against ground truths: `RewardScorer`, `score_batch`, `math_reward`.

Math items are settled in this process when string work can (no box, equal normalised strings,
plain numbers); the rest, deduplicated, go to worker processes with a per-item time limit (see
`worker_pool.py`). In GRPO most rollouts of a prompt box the same few answers, so deduplication
and the fast path leave the workers little to do. Multiple-choice items never need a worker.

Usage across RL steps:

    with RewardScorer(num_workers=8) as scorer:
        for batch in batches:
            rewards = scorer.score(batch.responses, batch.answers).scores   # [N] float32
"""

import functools
import os
import threading
import time
from collections.abc import Sequence

from gift_jax.rewards.ground_truth import check_ground_truth
from gift_jax.rewards.math_answer import prepare_math_item, quick_math_verdict
from gift_jax.rewards.multiple_choice import DEFAULT_CHOICES, extract_choice, reference_choice
from gift_jax.rewards.results import BatchScores, ItemStatus
from gift_jax.rewards.worker_pool import WorkerPool

KINDS = ("math", "multiple_choice")
DEFAULT_MEMORY_LIMIT_BYTES = 4 << 30


def default_num_workers() -> int:
    """Workers used when none are asked for: one per CPU core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _scorable(ground_truths: Sequence[str], kind: str, choices: str) -> list[bool]:
    """Which ground truths `check_ground_truth` accepts. Readers refuse the others before a run; one
    that slips through scores 0 with status BAD_GROUND_TRUTH instead of stopping the batch."""
    scorable = []
    for ground_truth in ground_truths:
        try:
            check_ground_truth(ground_truth, kind=kind, choices=choices)
        except ValueError:
            scorable.append(False)
        else:
            scorable.append(True)
    return scorable


def _check_batch(responses: Sequence[str], ground_truths: Sequence[str], kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(responses) != len(ground_truths):
        raise ValueError(f"responses has {len(responses)} items but ground_truths has {len(ground_truths)}")
    for name, texts in (("responses", responses), ("ground_truths", ground_truths)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{index}] must be a str, got {type(text).__name__}")


class RewardScorer:
    """Scores batches of responses, keeping its worker processes alive between batches.

    Args:
        num_workers: worker processes for the symbolic math check (default: `default_num_workers()`).
            They start on first need, not at construction.
        timeout_s: default time limit per checked item, in seconds.
        memory_limit_bytes: address-space limit of each worker (None: unlimited).
        enable_test_hooks: tests only; lets the worker hang / crash answers of
            `worker_protocol.py` act.

    Thread-safe (one batch at a time). Close it, or use it as a context manager; workers left
    open are killed at interpreter exit.
    """

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        timeout_s: float = 5.0,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES,
        enable_test_hooks: bool = False,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._timeout_s = timeout_s
        self._pool = WorkerPool(
            default_num_workers() if num_workers is None else num_workers,
            memory_limit_bytes=memory_limit_bytes,
            enable_test_hooks=enable_test_hooks,
        )
        self._lock = threading.Lock()

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def num_workers_started(self) -> int:
        """Worker processes alive or starting now (0 until a batch needs the symbolic check)."""
        return self._pool.num_started

    def close(self) -> None:
        """Stop the worker processes. The scorer stays usable; it restarts them on need."""
        with self._lock:
            self._pool.close()

    def score(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[str],
        *,
        kind: str = "math",
        timeout_s: float | None = None,
        batch_timeout_s: float | None = None,
        choices: str = DEFAULT_CHOICES,
    ) -> BatchScores:
        """Score `responses[i]` against `ground_truths[i]` for all i.

        Args:
            kind: "math" (final `\\boxed{}` answer against a bare or boxed reference) or
                "multiple_choice" (option letter against a letter such as "C" or "(C)").
            timeout_s: time limit per checked item (default: the scorer's).
            batch_timeout_s: if set, items unfinished this many seconds after the call began
                score 0 as TIMED_OUT, so the call returns by then.
            choices: valid option letters for "multiple_choice" (e.g. "ABCDEFGHIJ" for MMLU-Pro).

        Raises ValueError / TypeError naming the argument or row for malformed calls (lengths, types,
        kind, time limits). A ground truth that `check_ground_truth` refuses (empty, an unclosed box,
        no option letter) does not raise: its item scores 0 with status BAD_GROUND_TRUTH, counted in
        `bad_ground_truth` (data readers refuse such rows before a run starts).
        """
        started = time.monotonic()
        _check_batch(responses, ground_truths, kind)
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        scorable = _scorable(ground_truths, kind, choices)
        if kind == "multiple_choice":
            return self._score_multiple_choice(responses, ground_truths, choices, scorable)
        deadline = None if batch_timeout_s is None else started + batch_timeout_s
        with self._lock:
            return self._score_math(responses, ground_truths, scorable, timeout_s, deadline)

    def _score_math(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[str],
        scorable: Sequence[bool],
        timeout_s: float,
        deadline: float | None,
    ) -> BatchScores:
        items = [
            prepare_math_item(response, ground_truth) if ok else None
            for response, ground_truth, ok in zip(responses, ground_truths, scorable)
        ]
        verdicts = [quick_math_verdict(item) if item is not None else False for item in items]
        correct = [bool(verdict) for verdict in verdicts]
        statuses = [ItemStatus.OK if ok else ItemStatus.BAD_GROUND_TRUTH for ok in scorable]
        open_indices = [index for index, verdict in enumerate(verdicts) if verdict is None]
        # Identical (answer, reference) pairs are checked once.
        requests = list(dict.fromkeys(items[index] for index in open_indices))
        checked = self._pool.check(requests, timeout_s=timeout_s, deadline=deadline)
        outcomes = dict(zip(requests, checked, strict=True))
        for index in open_indices:
            statuses[index], correct[index] = outcomes[items[index]]
        return BatchScores.from_items(correct, statuses)

    @staticmethod
    def _score_multiple_choice(
        responses: Sequence[str], ground_truths: Sequence[str], choices: str, scorable: Sequence[bool]
    ) -> BatchScores:
        references = [
            reference_choice(ground_truth, choices) if ok else None for ground_truth, ok in zip(ground_truths, scorable)
        ]
        correct = [extract_choice(response, choices) == reference for response, reference in zip(responses, references)]
        statuses = [ItemStatus.OK if ok else ItemStatus.BAD_GROUND_TRUTH for ok in scorable]
        return BatchScores.from_items(correct, statuses)


def score_batch(
    responses: Sequence[str],
    ground_truths: Sequence[str],
    *,
    kind: str = "math",
    timeout_s: float = 5.0,
    num_workers: int | None = None,
    batch_timeout_s: float | None = None,
    choices: str = DEFAULT_CHOICES,
) -> BatchScores:
    """One-off `RewardScorer(...).score(...)`; its workers stop on return.

    Prefer a long-lived `RewardScorer` in a loop: starting workers costs about a second.
    """
    with RewardScorer(num_workers=num_workers, timeout_s=timeout_s) as scorer:
        return scorer.score(responses, ground_truths, kind=kind, batch_timeout_s=batch_timeout_s, choices=choices)


@functools.cache
def _shared_scorer() -> RewardScorer:
    """The process-wide scorer behind `math_reward` (one worker, started on first need)."""
    return RewardScorer(num_workers=1)


def math_reward(response: str, ground_truth: str, *, timeout_s: float = 5.0) -> float:
    """1.0 if the final `\\boxed{}` answer of `response` equals `ground_truth`, else 0.0.

    The final answer is the last box, with the boxes right before it when it is split over
    several (`\\boxed{1}, \\boxed{2}`); numbers compare exactly (see `numeric.py`).

    `ground_truth` may be bare (`\\frac{1}{2}`) or boxed. Cheap cases are decided in this
    process; the symbolic check runs in one shared worker process (started on first need, kept
    until exit) and scores 0.0 if it takes longer than `timeout_s`. It never raises on a malformed
    ground truth (empty, an unclosed box, unbalanced braces): that scores 0.0 (`RewardScorer.score`
    counts it as BAD_GROUND_TRUTH).
    """
    return float(_shared_scorer().score([response], [ground_truth], timeout_s=timeout_s).scores[0])
