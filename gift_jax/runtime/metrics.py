"""Metric sinks for the training loops: console lines, TensorBoard events, a JSONL file, a progress bar.

Only process 0 writes; other processes get a writer that drops everything, so loops call it freely.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm


def _scalar(value) -> float:
    return float(np.asarray(jax.device_get(value)))


def _set_aside_lines_after(path: Path, step: int) -> None:
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
    with path.with_name(path.stem + ".superseded.jsonl").open("a") as f:
        f.writelines(superseded)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(kept))
    partial.replace(path)  # atomic: a kill now leaves either the old file or the new one


class MetricWriter:
    """`write(step, {"name": value})` -> `workdir/metrics.jsonl`, TensorBoard and (every `log_every`) console."""

    def __init__(self, workdir: str | os.PathLike, *, total_steps: int, initial_step: int = 0,
                 log_every: int = 10, desc: str = "train", enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.log_every = max(1, log_every)
        self._last = {}
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter

        workdir = Path(workdir)
        _set_aside_lines_after(workdir / "metrics.jsonl", initial_step)
        self._jsonl = (workdir / "metrics.jsonl").open("a")
        self._tb = SummaryWriter(str(workdir / "tensorboard"))
        self._bar = tqdm(total=total_steps, initial=initial_step, desc=desc, dynamic_ncols=True,
                         mininterval=1.0, disable=None)

    def write(self, step: int, metrics: dict, *, prefix: str = "") -> dict[str, float]:
        """Logs scalars (device arrays are fetched here, outside any jitted code)."""
        values = {f"{prefix}{k}": _scalar(v) for k, v in metrics.items()}
        if not self.enabled:
            return values
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            if math.isfinite(value):
                self._tb.add_scalar(name, value, step)
        self._last.update(values)
        if prefix == "" or prefix == "train/":
            self._bar.n = step
            shown = {k.split("/")[-1]: f"{v:.4g}" for k, v in values.items()
                     if k.split("/")[-1] in ("loss", "tokens_per_s", "reward_mean", "val_loss")}
            self._bar.set_postfix(shown, refresh=False)
            self._bar.refresh()
        if step % self.log_every == 0 or prefix not in ("", "train/"):
            text = " ".join(f"{k}={v:.5g}" for k, v in sorted(values.items()))
            self._bar.write(f"[step {step}] {text}")
        return values

    def close(self):
        if self.enabled:
            self._bar.close()
            self._tb.close()
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

    def push(self, step: int, metrics: dict, **host_values: float) -> None:
        """Queues step `step`'s (device) metrics, plus host-side values; logs the previous step's."""
        self.flush()
        self._pending = (step, metrics, host_values)

    def flush(self) -> None:
        if self._pending is None:
            return
        step, metrics, host_values = self._pending
        self._pending = None
        values = jax.device_get(metrics)
        now = time.perf_counter()
        if "tokens" in values:
            values["tokens_per_s"] = float(values["tokens"]) / max(now - self._last_fetch, 1e-9)
        self._last_fetch = now
        self._writer.write(step, {**values, **host_values}, prefix=self._prefix)

    def restart_clock(self) -> None:
        """Excludes the time since the last fetch (validation, checkpointing) from the next rate."""
        self._last_fetch = time.perf_counter()
