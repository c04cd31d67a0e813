"""Metric sinks for the stages: a JSONL file and TensorBoard events (every value), short console progress lines.

Only process 0 writes; other processes get a writer that drops everything, so loops call it freely.
The workdir may be an object-store URL (`gift_jax.storage`): both files are then rewritten whole at
most every 30 s and at the end, since an object cannot be appended to.

Every write happens on the calling thread: a write that fails (a full disk) raises `StorageError`
naming the file, and the run ends with that one line. (tensorboardX's `SummaryWriter` writes on a
thread of its own; when that thread dies on ENOSPC the trainer blocks forever on its full queue.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import jax
import numpy as np
from etils import epath

from gift_jax.errors import storage_error
from gift_jax.storage import Appender, append_text, as_path, is_url, register_tensorboard_object_stores

TENSORBOARD_FLUSH_S = 30.0  # event files are flushed (fsync'd) at most this often, and on close


@contextlib.contextmanager
def _writing(path):
    """Turns an I/O error while writing `path` into one `StorageError` naming it."""
    try:
        yield
    except OSError as err:
        raise storage_error(str(path), err) from err


class _EventFile:
    """TensorBoard scalars appended to one event file on the calling thread (tensorboardX's synchronous
    `EventsWriter`; object-store folders through `register_tensorboard_object_stores`)."""

    def __init__(self, logdir):
        from tensorboardX.event_file_writer import EventsWriter

        self.logdir = as_path(logdir)
        with _writing(self.logdir):
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._events = EventsWriter(os.path.join(os.fspath(self.logdir), "events"))
        self._flushed_at = time.monotonic()

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        now = time.time()
        with _writing(self.logdir):
            for name, value in values.items():
                self._events.write_event(Event(wall_time=now, step=step, summary=scalar(name, value)))
            if time.monotonic() - self._flushed_at >= TENSORBOARD_FLUSH_S:
                self._events.flush()
                self._flushed_at = time.monotonic()

    def close(self) -> None:
        with _writing(self.logdir):
            self._events.close()


def _scalar(value) -> float:
    return float(np.asarray(jax.device_get(value)))


def _set_aside_lines_after(path: Path | epath.Path, step: int) -> None:
    """A resumed run redoes the steps after its checkpoint: their old lines move to `*.superseded.jsonl`.

    So `metrics.jsonl` holds each step once, from the run that produced the final state, and only
    whole JSON lines (a line cut by a kill goes aside too); nothing written before is lost.
    """
    if not path.exists():
        return
    kept, superseded = [], []
    for line in path.read_text().splitlines(keepends=True):
        try:
            keep = step > 0 and json.loads(line).get("step", 0) <= step  # from scratch: nothing is kept
        except (json.JSONDecodeError, AttributeError):  # a line cut by a kill goes aside too
            keep = False
        (kept if keep else superseded).append(line if line.endswith("\n") else line + "\n")
    if not superseded:
        return
    append_text(path.with_name(path.stem + ".superseded.jsonl"), "".join(superseded))
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(kept))
    partial.replace(path)  # atomic: a kill now leaves either the old file or the new one


# The few numbers a person watches; everything else goes to metrics.jsonl and TensorBoard only.
PROGRESS_KEYS = ("loss", "reward_mean", "accuracy", "tokens_per_s", "rollout_tokens_per_s")
VALIDATION_KEYS = ("val_loss", "avg@", "pass@1")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class MetricWriter:
    """`write(step, {"name": value})` -> `workdir/metrics.jsonl` and TensorBoard (every value), and the
    console: one progress line every `log_every` steps (step, loss or reward, tokens/s, ETA) and one
    line per validation."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        total_steps: int,
        initial_step: int = 0,
        log_every: int = 10,
        desc: str = "train",
        enabled: bool | None = None,
    ):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.log_every = max(1, log_every)
        self.total_steps, self.desc = total_steps, desc
        if not self.enabled:
            return
        workdir = as_path(workdir)
        if is_url(workdir):
            register_tensorboard_object_stores()
        self._jsonl_path = workdir / "metrics.jsonl"
        with _writing(self._jsonl_path):
            _set_aside_lines_after(self._jsonl_path, initial_step)
            self._jsonl = Appender(self._jsonl_path)
        self._tb = _EventFile(workdir / "tensorboard")
        self._start = (time.perf_counter(), initial_step)  # for the ETA

    def write(self, step: int, metrics: dict, *, prefix: str = "") -> dict[str, float]:
        """Logs scalars (device arrays are fetched here, outside any jitted code)."""
        values = {f"{prefix}{k}": _scalar(v) for k, v in metrics.items()}
        if not self.enabled:
            return values
        with _writing(self._jsonl_path):
            self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
            self._jsonl.flush()
        self._tb.add_scalars(step, {name: value for name, value in values.items() if math.isfinite(value)})
        if prefix in ("", "train/") and (step % self.log_every == 0 or step == self.total_steps):
            print(self._progress_line(step, metrics), flush=True)
        elif prefix not in ("", "train/"):
            shown = {k: v for k, v in values.items() if prefix != "val/" or any(key in k for key in VALIDATION_KEYS)}
            print(f"[{self.desc} step {step}] " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()), flush=True)
        return values

    def _progress_line(self, step: int, metrics: dict) -> str:
        shown = " ".join(f"{k}={_scalar(metrics[k]):.4g}" for k in PROGRESS_KEYS if k in metrics)
        started, first_step = self._start
        done = step - first_step
        eta = ""
        if done > 0 and self.total_steps > step:
            eta = f" eta {_duration((time.perf_counter() - started) / done * (self.total_steps - step))}"
        return f"[{self.desc} step {step}/{self.total_steps}] {shown}{eta}"

    def close(self):
        if self.enabled:
            with contextlib.ExitStack() as closing:  # both close even if the first fails
                closing.callback(self._tb.close)
                with _writing(self._jsonl_path):
                    self._jsonl.close()


class LaggedTrainMetrics:
    """Logs each step's device metrics one step late, so the host never waits on the device to log.

    Fetching a step's metrics blocks until that step has run. Fetched right after dispatch, the
    device sits idle while the host logs and loads the next batch; fetched after the *next* step is
    dispatched, that host work overlaps with it. `tokens_per_s` is measured between fetches, i.e.
    the steady-state step rate. Call `flush()` before anything that reads the step's state on the
    host (validation, checkpoints) and at the end.
    """

    def __init__(self, writer: MetricWriter, prefix: str = "train/"):
        self._writer, self._prefix = writer, prefix
        self._pending = None
        self._last_fetch = time.perf_counter()

    def push(self, step: int, metrics: dict, **host_values: float) -> tuple[int, dict[str, float]] | None:
        """Queues step `step`'s (device) metrics, plus host-side values; logs the previous step's and
        returns them as `flush` does."""
        logged = self.flush()
        self._pending = (step, metrics, host_values)
        return logged

    def flush(self) -> tuple[int, dict[str, float]] | None:
        """Logs the pending step; returns `(its step, the values logged)`, or None when none was pending."""
        if self._pending is None:
            return None
        step, metrics, host_values = self._pending
        self._pending = None
        values = jax.device_get(metrics)
        now = time.perf_counter()
        if "tokens" in values:
            values["tokens_per_s"] = float(values["tokens"]) / max(now - self._last_fetch, 1e-9)
        self._last_fetch = now
        return step, self._writer.write(step, {**values, **host_values}, prefix=self._prefix)

    def restart_clock(self) -> None:
        """Excludes the time since the last fetch (validation, checkpointing) from the next rate."""
        self._last_fetch = time.perf_counter()
