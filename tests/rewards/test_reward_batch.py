"""The batch API: workers, per-item and per-batch time limits, crashes, deduplication, errors."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gift_jax.rewards import BatchScores, ItemStatus, RewardScorer, score_batch
from gift_jax.rewards.worker_protocol import CRASH_ANSWER, HANG_ANSWER

HANG = "\\boxed{" + HANG_ANSWER + "}"
CRASH = "\\boxed{" + CRASH_ANSWER + "}"


@pytest.fixture(scope="module")
def hooked_scorer():
    with RewardScorer(num_workers=2, timeout_s=3.0, enable_test_hooks=True) as scorer:
        yield scorer


def test_hung_and_crashed_items_score_zero_and_are_counted(hooked_scorer):
    responses = ["\\boxed{2\\sqrt{2}}", HANG, "\\boxed{3}", CRASH, "\\boxed{x^2+2x+1}", "\\boxed{\\sqrt{2}}"]
    ground_truths = ["\\sqrt{8}", "1", "3", "1", "(x+1)^2", "\\sqrt{3}"]
    start = time.perf_counter()
    scores = hooked_scorer.score(responses, ground_truths)
    elapsed = time.perf_counter() - start
    assert isinstance(scores, BatchScores)
    assert scores.scores.dtype == np.float32 and scores.scores.shape == (6,)
    assert scores.scores.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert scores.statuses == (
        ItemStatus.OK,
        ItemStatus.TIMED_OUT,
        ItemStatus.OK,
        ItemStatus.CRASHED,
        ItemStatus.OK,
        ItemStatus.OK,
    )
    assert (scores.timed_out, scores.crashed) == (1, 1)
    assert elapsed < 15.0
    # The killed workers were replaced: the pool goes on.
    again = hooked_scorer.score(["\\boxed{2\\sqrt{2}}", CRASH], ["\\sqrt{8}", "1"])
    assert again.scores.tolist() == [1.0, 0.0] and again.crashed == 1
    assert hooked_scorer.num_workers_started == 2


def test_batch_deadline_bounds_the_call(hooked_scorer):
    start = time.perf_counter()
    responses = [HANG, HANG.replace("}", " }"), "\\boxed{4}"]
    scores = hooked_scorer.score(responses, ["1", "2", "4"], timeout_s=60.0, batch_timeout_s=1.0)
    assert time.perf_counter() - start < 5.0
    assert scores.statuses == (ItemStatus.TIMED_OUT, ItemStatus.TIMED_OUT, ItemStatus.OK)
    assert scores.scores.tolist() == [0.0, 0.0, 1.0] and scores.timed_out == 2


def test_hooks_are_inert_without_the_flag():
    with RewardScorer(num_workers=1, timeout_s=5.0) as scorer:
        scores = scorer.score([HANG, CRASH], ["1", "1"])
    assert scores.statuses == (ItemStatus.OK, ItemStatus.OK) and scores.scores.tolist() == [0.0, 0.0]


def test_cheap_items_start_no_worker():
    with RewardScorer(num_workers=2) as scorer:
        scores = scorer.score(["\\boxed{0.5}", "\\boxed{7}", "no box"], ["\\frac{1}{2}", "8", "1"])
        assert scorer.num_workers_started == 0
    assert scores.scores.tolist() == [1.0, 0.0, 0.0]


def test_identical_items_are_checked_once(monkeypatch):
    with RewardScorer(num_workers=1) as scorer:
        requests_seen = []
        check = scorer._pool.check

        def counting_check(requests, **kwargs):
            requests_seen.append(len(requests))
            return check(requests, **kwargs)

        monkeypatch.setattr(scorer._pool, "check", counting_check)
        group = ["\\boxed{2\\sqrt{2}}"] * 6 + ["\\boxed{\\sqrt{8}}"] * 2
        scores = scorer.score(group, ["\\sqrt{8}"] * 8)
    assert scores.scores.tolist() == [1.0] * 8
    assert requests_seen == [1]  # the second answer is equal to the reference as a string


def test_score_batch_function():
    scores = score_batch(["\\boxed{2\\sqrt{2}}", "\\boxed{1}"], ["\\sqrt{8}", "2"], num_workers=1)
    assert scores.scores.tolist() == [1.0, 0.0]
    assert score_batch([], []).scores.shape == (0,)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: score_batch(["a"], ["1", "2"]), ValueError, "1 items but ground_truths has 2"),
        (lambda: score_batch(["a", None], ["1", "2"]), TypeError, r"responses\[1\] must be a str"),
        (lambda: score_batch(["a"], ["1"], kind="code"), ValueError, "kind must be one of"),
        (lambda: score_batch(["a"], ["1"], timeout_s=0), ValueError, "timeout_s must be positive"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_workers_and_trainer_side_stay_light():
    probe = (
        "import sys\n"
        "import gift_jax.rewards\n"
        "trainer_side = sorted(m for m in ('sympy', 'jax', 'math_verify') if m in sys.modules)\n"
        "import gift_jax.rewards.worker, gift_jax.rewards.symbolic\n"
        "print(trainer_side, 'jax' in sys.modules)\n"
    )
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[] False"


def test_workers_exit_when_their_parent_is_killed():
    """A trainer killed with SIGKILL leaves no worker behind, even one stuck in a check."""
    trainer_script = (
        "import threading, time\n"
        "from gift_jax.rewards import RewardScorer\n"
        "scorer = RewardScorer(num_workers=1, timeout_s=600.0, enable_test_hooks=True)\n"
        f"threading.Thread(target=scorer.score, args=([{HANG!r}], ['1']), daemon=True).start()\n"
        "time.sleep(600)\n"
    )
    trainer = subprocess.Popen([sys.executable, "-c", trainer_script])
    try:
        workers = _wait_for(lambda: _children(trainer.pid), timeout_s=30.0)
        time.sleep(2.0)  # the worker imports, reports ready and takes the hanging item
    finally:
        trainer.kill()
        trainer.wait()
    assert workers
    assert _wait_for(lambda: not any(map(_alive, workers)), timeout_s=10.0)


def _wait_for(condition, timeout_s: float):
    """Poll `condition` until it returns something true or `timeout_s` passes; return its value."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def _children(pid: int) -> list[int]:
    """Child process ids of `pid`, started by any of its threads (Linux /proc)."""
    return [
        int(child)
        for children in Path(f"/proc/{pid}/task").glob("*/children")
        for child in children.read_text().split()
    ]


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (zombies waiting to be reaped count as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
