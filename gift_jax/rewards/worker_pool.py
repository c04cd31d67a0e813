"""A pool of answer-checking worker processes with a time limit per item.

Each worker is a plain `python -m gift_jax.rewards.worker` subprocess speaking JSON lines over
pipes (see `worker.py`). Plain subprocesses rather than `multiprocessing`: a spawned or
forkserver child re-imports the parent's `__main__` (a training script that imports JAX), and a
`ProcessPoolExecutor` cannot kill one hung task without breaking the whole pool. Here a worker
that runs past an item's deadline is SIGKILLed and replaced while the other workers carry on; a
worker that dies mid-item is replaced too. Its item is reported TIMED_OUT or CRASHED.

POSIX only (selectors on pipes, RLIMIT_AS). Not thread-safe: one `check` call at a time.
"""

import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import selectors
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from gift_jax.rewards.results import ItemStatus
from gift_jax.rewards.worker_protocol import TEST_HOOKS_ENV, WORKER_MODULE

_log = logging.getLogger(__name__)

# Workers that die or stall this many times in a row before saying "ready" mean a broken
# environment (say, sympy missing), which no retry fixes.
MAX_CONSECUTIVE_STARTUP_FAILURES = 3
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclasses.dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    startup_deadline: float
    ready: bool = False
    item: int | None = None  # index of the request being checked, None when idle
    item_deadline: float = math.inf
    unread: bytearray = dataclasses.field(default_factory=bytearray)


def _kill(processes: Sequence[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):  # unsent bytes to a dead worker: nothing to flush to
                pipe.close()


class WorkerPool:
    """Up to `num_workers` worker processes, started on demand and kept between `check` calls.

    Args:
        num_workers: most processes checking at once.
        memory_limit_bytes: address-space limit per worker (None: unlimited); a check that
            exceeds it fails with MemoryError and counts as not equal.
        enable_test_hooks: lets the test-only hang / crash answers act (tests only).
        startup_timeout_s: how long a new worker may take to import sympy and report ready.
    """

    def __init__(
        self,
        num_workers: int,
        *,
        memory_limit_bytes: int | None = None,
        enable_test_hooks: bool = False,
        startup_timeout_s: float = 60.0,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self._num_workers = num_workers
        self._startup_timeout_s = startup_timeout_s
        self._command = [sys.executable, "-m", WORKER_MODULE]
        if memory_limit_bytes:
            self._command += ["--memory-limit-bytes", str(memory_limit_bytes)]
        self._env = dict(os.environ)
        # Workers must import this very package even when it is not installed.
        self._env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        self._env.pop(TEST_HOOKS_ENV, None)
        if enable_test_hooks:
            self._env[TEST_HOOKS_ENV] = "1"
        self._workers: list[_Worker] = []
        self._processes: list[subprocess.Popen] = []  # the same processes, for the finalizer
        self._selector = selectors.DefaultSelector()
        self._startup_failures = 0
        self._finalizer = weakref.finalize(self, _kill, self._processes)

    @property
    def num_started(self) -> int:
        """Worker processes currently alive or starting."""
        return len(self._workers)

    def close(self) -> None:
        """Stop all workers (idempotent). A later `check` starts new ones."""
        for worker in self._workers:
            self._selector.unregister(worker.process.stdout)
        self._workers.clear()
        _kill(self._processes)
        self._processes.clear()

    def check(
        self, requests: Sequence[tuple[str, str]], *, timeout_s: float, deadline: float | None = None
    ) -> list[tuple[ItemStatus, bool]]:
        """Check (answer, reference) pairs in the workers; returns (status, correct) per pair.

        Each pair gets `timeout_s` seconds of a worker's time; pairs still unfinished at the
        `time.monotonic()` instant `deadline` are TIMED_OUT as well. So the call returns within
        about `ceil(N / num_workers) * (timeout_s + worker startup)` seconds, and by `deadline`.
        """
        results: list[tuple[ItemStatus, bool] | None] = [None] * len(requests)
        pending = collections.deque(range(len(requests)))
        try:
            while len(self._workers) < min(self._num_workers, len(requests)):
                self._start_worker()
            while pending or any(worker.item is not None for worker in self._workers):
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self._give_up(pending, results)
                    break
                self._dispatch(pending, requests, results, now + timeout_s)
                wait_s = max(0.0, self._next_event_time(deadline) - now)
                for key, _ in self._selector.select(timeout=wait_s):
                    self._read(key.data, results)
                self._expire(time.monotonic(), results)
        except BaseException:
            self.close()  # workers may hold items of this call; start clean next time
            raise
        return results

    def _start_worker(self) -> _Worker:
        # Their own session: a terminal's Ctrl-C or a scheduler's SIGTERM to the process group reaches only the
        # trainer, which finishes its step (rewards included) before stopping; workers exit when stdin closes.
        process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env, start_new_session=True
        )
        worker = _Worker(process, startup_deadline=time.monotonic() + self._startup_timeout_s)
        self._workers.append(worker)
        self._processes.append(process)
        self._selector.register(process.stdout, selectors.EVENT_READ, worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        """Kill `worker` (whatever it is doing) and start a fresh one in its place."""
        self._selector.unregister(worker.process.stdout)
        self._workers.remove(worker)
        self._processes.remove(worker.process)
        _kill([worker.process])
        if not worker.ready:
            self._startup_failures += 1
            if self._startup_failures >= MAX_CONSECUTIVE_STARTUP_FAILURES:
                raise RuntimeError(
                    f"answer-checking workers ({' '.join(self._command)}) failed to start "
                    f"{self._startup_failures} times in a row; their stderr above says why"
                )
        self._start_worker()

    def _finish(self, worker: _Worker, results: list, status: ItemStatus, correct: bool = False) -> None:
        results[worker.item] = (status, correct)
        worker.item, worker.item_deadline = None, math.inf

    def _dispatch(
        self, pending: collections.deque, requests: Sequence[tuple[str, str]], results: list, item_deadline: float
    ) -> None:
        for worker in list(self._workers):
            if not pending:
                return
            if not worker.ready or worker.item is not None:
                continue
            worker.item, worker.item_deadline = pending.popleft(), item_deadline
            answer, reference = requests[worker.item]
            line = json.dumps({"answer": answer, "reference": reference}) + "\n"
            try:
                worker.process.stdin.write(line.encode())
                worker.process.stdin.flush()
            except OSError:  # the worker died while idle
                self._finish(worker, results, ItemStatus.CRASHED)
                self._replace(worker)

    def _read(self, worker: _Worker, results: list) -> None:
        chunk = os.read(worker.process.stdout.fileno(), 1 << 16)
        if not chunk:  # the worker exited: killed by a signal, out of memory, or broken
            if worker.item is not None:
                self._finish(worker, results, ItemStatus.CRASHED)
            self._replace(worker)
            return
        worker.unread += chunk
        *lines, rest = worker.unread.split(b"\n")
        worker.unread = bytearray(rest)
        for line in filter(None, lines):
            reply = json.loads(line)
            if "ready" in reply:
                worker.ready = True
                self._startup_failures = 0
            elif "correct" in reply:
                self._finish(worker, results, ItemStatus.OK, bool(reply["correct"]))
            else:
                _log.warning("answer check raised in a worker: %s", reply.get("error"))
                self._finish(worker, results, ItemStatus.CRASHED)

    def _expire(self, now: float, results: list) -> None:
        for worker in list(self._workers):
            if worker.item is not None and now >= worker.item_deadline:
                self._finish(worker, results, ItemStatus.TIMED_OUT)
                self._replace(worker)
            elif not worker.ready and now >= worker.startup_deadline:
                self._replace(worker)

    def _give_up(self, pending: collections.deque, results: list) -> None:
        """The batch deadline passed: everything unfinished times out; busy workers are replaced."""
        while pending:
            results[pending.popleft()] = (ItemStatus.TIMED_OUT, False)
        for worker in list(self._workers):
            if worker.item is not None:
                self._finish(worker, results, ItemStatus.TIMED_OUT)
                self._replace(worker)

    def _next_event_time(self, deadline: float | None) -> float:
        """The earliest item deadline, startup deadline or batch deadline still to come."""
        times = [deadline if deadline is not None else math.inf]
        for worker in self._workers:
            times.append(worker.item_deadline if worker.ready else worker.startup_deadline)
        return min(times)
