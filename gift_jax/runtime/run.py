"""The run object both stages train inside: workdir, models, restore, the loop's bookkeeping, metrics,
checkpoints, preemption and exports.

    with StageRun(workdir, config, desc="init[gift]", best="min") as run:
        graphdef, params = run.load_policy()
        state = init_train_state(params, tx, run.mesh)
        run.stop_at(total_steps, config.train.max_steps, max_steps)
        state, meta = run.resume(state)
        while run.running():
            with run.timed("update"):
                ...                                # the stage's own work
            run.step += 1
            run.log(device_metrics, **host_values)
            if run.due(eval_every): ...            # validation
            run.checkpoint(state, meta, score=val_loss, periodic=run.due(checkpoint_every))
        return run.finish(state, summary)

Checkpoints are numbered by loop step (the step metrics, `max_steps`, `checkpoint_every` and
`--step` count); the optimizer's own update count is kept in each checkpoint's metadata.

What a run guarantees (the README's fault section says it for users):
- The workdir lock is held from entry to exit and released however the run ends; metrics and
  checkpoints are closed.
- SIGTERM / SIGINT (a preemption notice, a scheduler, Ctrl-C) set a flag: the current loop step
  finishes (an RL rollout phase may be abandoned and redone: `should_stop`), that step is
  checkpointed, and `finish` raises `RunStopped` (exit status 75). On several processes the stop is
  agreed through JAX's preemption sync point, so all save the same step.
  `train.checkpoint_every_minutes` bounds the wall time a kill -9 can lose.
- A best step is on disk before any metadata names it; a resumed run takes its best score from the
  best checkpoint itself. NaN / inf scores are never best.
- `train.max_consecutive_skipped` non-finite updates in a row end the run (`TrainingDiverged`); a run
  that applied no update exports nothing.
- A failed write (checkpoint, metrics, TensorBoard, export; e.g. a full disk) ends the run with one
  `StorageError` naming the file; the previous checkpoint stays usable.
- Resuming names the restored checkpoint and the changed resumable keys; any other config change,
  or a data file whose content changed, is refused (`runtime.workdir.check_resume`) before anything
  is loaded. Nothing is written into the workdir until `resume`, so a launch that fails while loading
  never blocks the corrected one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gift_jax.data.prompt_format import export_files
from gift_jax.errors import RunFailure, RunStopped, storage_error
from gift_jax.models import load_hf, save_hf
from gift_jax.models.hf_io import recover_interrupted_export
from gift_jax.parallel import make_mesh, replicated
from gift_jax.parallel.activations import activation_sharding
from gift_jax.runtime.checkpoint import Checkpointer
from gift_jax.runtime.metrics import LaggedTrainMetrics, MetricWriter
from gift_jax.runtime.optim import skipped_updates
from gift_jax.runtime.train_state import TrainState
from gift_jax.runtime.workdir import (
    WorkdirLock,
    check_resume,
    check_writable,
    data_fingerprints,
    save_run_identity,
)

EXPORTS = ("hf_final", "hf_best")


class TrainingDiverged(RunFailure):
    """Too many non-finite updates in a row (names the steps)."""


def jit_update(update_fn, state: TrainState, mesh, num_inputs: int = 1):
    """`update_fn(state, *inputs) -> (state, metrics)` jitted with the state donated and kept in its
    shardings, traced inside `activation_sharding(mesh)` so activations stay split over the batch axes
    (FSDP gathers weights per layer instead of all-reducing whole-batch activations). `state` may be
    abstract (`jax.ShapeDtypeStruct`s with shardings), as in a compile-only fit check."""
    state_shardings = jax.tree.map(lambda x: x.sharding, state)

    def update(state, *inputs):
        with activation_sharding(mesh):
            return update_fn(state, *inputs)

    return jax.jit(
        update,
        in_shardings=(state_shardings,) + (None,) * num_inputs,
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,),
    )


def param_shardings(params):
    """The shardings of a parameter pytree (what `accumulate_and_apply` pins its accumulator to)."""
    return jax.tree.map(lambda x: x.sharding, params)


class _Span:
    """`StageRun.timed`'s handle: `seconds` once the block has ended."""

    seconds: float = 0.0


class StageRun:
    """One stage's run in one workdir (a context manager; see the module docstring)."""

    def __init__(
        self,
        workdir,
        config,
        *,
        desc: str,
        best: Literal["min", "max"] = "min",
        allow_changed_data: bool = False,
    ):
        """`config` has `model` (`ModelSection`), `data` (its `*_file` keys are fingerprinted), `train` (a
        `RunSection`) and `mesh` sections; `best` says whether a lower or a higher validation score is
        better; `allow_changed_data` resumes even if a data file's content changed since the run began."""
        self.workdir = check_writable(workdir)
        self.config, self.desc, self.best = config, desc, best
        self.allow_changed_data = allow_changed_data
        self.mesh = make_mesh(config.mesh)
        self.step = 0  # loop steps done
        self.total_steps = self.last_step = 0  # set by stop_at
        self.best_score: float | None = None
        self.graphdef = self.model_config = None
        self._lock = WorkdirLock(self.workdir)
        self._fingerprints = data_fingerprints(config)
        self._checkpointer: Checkpointer | None = None
        self._writer: MetricWriter | None = None
        self._train_log: LaggedTrainMetrics | None = None
        self._times: dict[str, float] = {}
        self._resumed_at = 0
        self._signal: str | None = None  # the stop signal received on this process
        self._stop_agreed = False  # every process agreed to stop (or the only one got a signal)
        self._stopped = False  # the stop is done: the current step is checkpointed (or nothing new to save)
        self._sync_calls = 0  # preemption sync points asked so far (the same count on every process)
        self._previous_handlers: dict[int, object] = {}
        self._saved_at = time.monotonic()  # last periodic save, for train.checkpoint_every_minutes
        self._resume_notes: list[str] = []  # changed resumable keys (process 0 checks them)

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> StageRun:
        if jax.process_index() == 0:
            self._lock.acquire()
            try:
                self._resume_notes = check_resume(
                    self.workdir, self.config, self._fingerprints, allow_changed_data=self.allow_changed_data
                )
                for name in EXPORTS:  # an export killed half way: its temporary folders go
                    recover_interrupted_export(self.workdir / name)
            except BaseException:
                self._lock.release()
                raise
        self._install_signal_handlers()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        with contextlib.ExitStack() as closing:  # every close runs even if an earlier one raises
            closing.callback(self._lock.release)
            closing.callback(self._restore_signal_handlers)
            if self._checkpointer is not None:
                closing.callback(self._checkpointer.close)
            if exc is None:
                self._close_metrics()
            else:  # the error that ended the run is the one to report, not a second one while closing
                with contextlib.suppress(Exception):
                    self._close_metrics()

    # -- models -----------------------------------------------------------------------------------
    def load_policy(self):
        """The policy from `model.path` -> `(graphdef, params)`, sharded over the mesh."""
        m = self.config.model
        policy, self.model_config = load_hf(
            m.path,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            mesh=self.mesh,
            remat=m.remat,
            attention=m.attention,
            scan_layers=m.scan_layers,
        )
        self.graphdef, params = nnx.split(policy, nnx.Param)
        return self.graphdef, params

    def load_base(self):
        """The frozen base (`model.base_path`, else `model.path`) in `model.base_param_dtype`.

        Returns `(graphdef, params)`."""
        m = self.config.model
        base, _ = load_hf(
            m.base_path or m.path,
            dtype=m.dtype,
            param_dtype=m.base_param_dtype or m.param_dtype,
            mesh=self.mesh,
            attention=m.attention,
            scan_layers=m.scan_layers,
        )
        return nnx.split(base, nnx.Param)

    # -- the loop's bookkeeping -------------------------------------------------------------------
    def stop_at(self, total_steps: int, *limits: int | None) -> int:
        """The loop step the run ends at: `total_steps` (what the schedule spans), or the smallest of
        `limits` that is set (`train.max_steps`, `--max-steps`). Sets `total_steps` / `last_step`."""
        self.total_steps = total_steps
        self.last_step = min([total_steps, *(limit for limit in limits if limit is not None)])
        return self.last_step

    def running(self) -> bool:
        """Whether to run another loop step: not at `last_step`, and no stop done (a stop asked before
        the first step of this launch ends the loop at once: there is nothing new to save)."""
        if self._stopped:
            return False
        if self.step == self._resumed_at and self.step < self.last_step and self.should_stop():
            self._stopped = True
            return False
        return self.step < self.last_step

    def due(self, every: int | None) -> bool:
        """Whether something done every `every` loop steps is due now (always at the last step; `every`
        None: only then)."""
        return self.step == self.last_step or (every is not None and self.step % every == 0)

    @contextlib.contextmanager
    def timed(self, name: str):
        """`with run.timed("rollout") as span:` -> `time_rollout_s` in this step's metrics (`log`),
        `span.seconds` after the block. Spans of one name in a step add up (dynamic sampling's rounds)."""
        span, start = _Span(), time.perf_counter()
        try:
            yield span
        finally:
            span.seconds = time.perf_counter() - start
            key = f"time_{name}_s"
            self._times[key] = self._times.get(key, 0.0) + span.seconds

    def should_stop(self) -> bool:
        """Whether the run was asked to stop (SIGTERM / SIGINT). Every process of a run must call this
        the same number of times in the same order (the loops and the rollout engine do): with several
        processes the answer is JAX's preemption sync point, True on all of them at the same call."""
        if not self._stop_agreed:
            if jax.process_count() > 1:
                self._stop_agreed = multihost_utils.reached_preemption_sync_point(self._sync_calls)
                self._sync_calls += 1
            else:
                self._stop_agreed = self._signal is not None
        return self._stop_agreed

    def _install_signal_handlers(self) -> None:
        """SIGINT (and, on one process, SIGTERM) set the stop flag. With several processes SIGTERM is left
        to the distributed runtime's preemption notifier, which tells every process; a SIGINT is passed
        on to it as a SIGTERM."""
        if threading.current_thread() is not threading.main_thread():
            return  # a run started from a thread: signals stay with the main program
        signals = [signal.SIGINT] + ([signal.SIGTERM] if jax.process_count() == 1 else [])
        for signum in signals:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self._signal = self._signal or name
        # os.write, not print: a handler may run while the main thread is inside a print.
        os.write(
            2,
            f"\n{name} received: finishing loop step {self.step + 1}, then checkpointing it and exiting "
            f"(status {RunStopped.exit_status}); Ctrl-C again exits at once without the checkpoint\n".encode(),
        )
        if jax.process_count() > 1 and signum == signal.SIGINT:
            os.kill(os.getpid(), signal.SIGTERM)  # to the preemption notifier: every process stops together

    # -- restore, log, checkpoint -----------------------------------------------------------------
    def resume(self, state: TrainState) -> tuple[TrainState, dict]:
        """Restores the newest checkpoint into `state`'s layout (if any), records the run's identity
        (`config.json`, `inputs.json`) and opens the metric sinks. Call `stop_at` first.

        Returns `(state, the stage's metadata)` ({} for a fresh run) and sets `step`.
        """
        t = self.config.train
        self._checkpointer = Checkpointer(self.workdir / "checkpoints", max_to_keep=t.max_to_keep)
        meta: dict = {}
        restored = self._checkpointer.restore_latest(state)
        if restored is not None:
            number, state, meta = restored
            if meta.get("step", number) != number:
                raise RunFailure(
                    f"{self.workdir / 'checkpoints'}: checkpoint {number} holds loop step {meta['step']}; it was "
                    f"written when checkpoints were numbered by optimizer update. Resume it with the gift-jax "
                    f"version that wrote it, or start a fresh --workdir"
                )
            self.step = self._resumed_at = number
            self.best_score = self._saved_best_score()
        if jax.process_index() == 0:
            try:
                save_run_identity(self.workdir, self.config, self._fingerprints)
            except OSError as err:
                raise storage_error(str(self.workdir / "config.json"), err) from err
            if restored is not None:
                print(
                    f"resumed from loop step {self.step} of {self.last_step}: "
                    f"{self.workdir / 'checkpoints' / 'periodic' / str(self.step)}",
                    flush=True,
                )
            for note in self._resume_notes:
                print(f"changed on resume: {note}", flush=True)
        self._writer = MetricWriter(
            self.workdir, total_steps=self.last_step, initial_step=self.step, log_every=t.log_every, desc=self.desc
        )
        self._train_log = LaggedTrainMetrics(self._writer)
        self._saved_at = time.monotonic()
        return state, meta

    def _saved_best_score(self) -> float | None:
        """The score of the best checkpoint on disk (what `hf_best` will be), None without a readable one."""
        step = self._checkpointer.best_step()
        if step is None:
            return None
        try:
            score = self._checkpointer.meta(step, "best").get("score")
        except Exception as err:  # an unreadable best step is reported again, by name, at export
            print(f"WARNING: {self.workdir / 'checkpoints' / 'best' / str(step)}: unreadable ({err})", flush=True)
            return None
        return score if score is not None and math.isfinite(score) else None

    def log(self, device_metrics: dict, **host_values: float) -> None:
        """This step's training metrics (and the `timed` spans); fetched from the device once the next
        step is dispatched. Ends the run when the updates keep failing (`train.max_consecutive_skipped`)."""
        host_values = {**self._times, **host_values}
        self._times = {}
        self._check_updates(self._train_log.push(self.step, device_metrics, **host_values))

    def _check_updates(self, logged: tuple[int, dict] | None) -> None:
        if logged is None:
            return
        step, values = logged
        in_a_row = int(values.get("train/consecutive_skipped", 0))
        limit = self.config.train.max_consecutive_skipped
        if in_a_row >= limit:
            raise TrainingDiverged(
                f"{self.workdir}: the last {in_a_row} updates (loop steps {step - in_a_row + 1}..{step}) had "
                f"non-finite gradients (loss {values.get('train/loss', float('nan')):.4g}) and were skipped; "
                f"stopping (train.max_consecutive_skipped={limit}). Check the model folder, the data and the "
                f"learning rate; the newest checkpoint holds the last finite state"
            )

    def write(self, values: dict, *, prefix: str) -> None:
        """Host values logged now (after any pending training metrics), e.g. prefix="val/"."""
        self._check_updates(self._train_log.flush())
        self._writer.write(self.step, values, prefix=prefix)

    @contextlib.contextmanager
    def host_work(self):
        """Wraps validation / checkpointing: pending metrics are logged first, its time is left out of tokens/s."""
        self._check_updates(self._train_log.flush())
        yield
        self._train_log.restart_clock()

    def improves(self, score: float | None) -> bool:
        if score is None or not math.isfinite(score):
            return False
        return self.best_score is None or (score < self.best_score if self.best == "min" else score > self.best_score)

    def checkpoint(
        self, state: TrainState, meta: dict, *, score: float | None = None, periodic: bool = False, resumable=True
    ) -> None:
        """Saves loop step `self.step`: as the best one when `score` improves on the best so far, and as a
        periodic one when `periodic`, when `train.checkpoint_every_minutes` have passed since the last, or
        when the run was asked to stop. `resumable=False` marks a state the data position cannot describe
        (between PSFT's mini-batches): only a best step is saved then, and a stop waits for a resumable step.

        A failed write ends the run (`CheckpointWriteError`); the previous checkpoints stay usable.
        """
        if score is not None and jax.process_count() > 1:
            # Every process must take the same save decision (orbax saves are collective); a score scored
            # on the host (RL's avg@k, wall-clock reward timeouts) could differ, so process 0's decides.
            score = float(multihost_utils.broadcast_one_to_all(np.float32(score)))
        improved = self.improves(score)
        stopping = self.should_stop()
        periodic = resumable and (periodic or stopping or self._minutes_due())
        if periodic or improved:
            with self.host_work():
                best = score if improved else self.best_score
                full_meta = {
                    **meta,
                    "step": self.step,
                    "optimizer_step": int(state.step),
                    "score": score,
                    "best_score": best,
                }
                self._checkpointer.save(self.step, state, full_meta, best=improved, periodic=periodic)
            self.best_score = best  # only once the best step is on disk
            if periodic:
                self._saved_at = time.monotonic()
        if stopping and periodic:
            self._stopped = True

    def _minutes_due(self) -> bool:
        minutes = self.config.train.checkpoint_every_minutes
        if minutes is None:
            return False
        due = time.monotonic() - self._saved_at >= 60.0 * minutes
        if jax.process_count() > 1:  # clocks differ: process 0's decides for all
            due = bool(multihost_utils.broadcast_one_to_all(np.int32(due)))
        return due

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, state: TrainState, summary: dict) -> dict:
        """Closes the metric sinks, exports hf_final / hf_best (when `train.export_hf`), writes summary.json.

        Raises `RunStopped` instead when the run was asked to stop (its step is checkpointed), and
        `RunFailure` when no update was ever applied (nothing is exported as if it had trained)."""
        self._close_metrics()
        if self._stopped:
            saved = self._checkpointer.steps()
            where = (
                f"newest checkpoint: {self.workdir / 'checkpoints' / 'periodic' / str(saved[-1])}"
                if saved
                else ("no checkpoint yet")
            )
            raise RunStopped(
                f"{self._signal or 'a preemption notice'}: stopped at loop step {self.step} of {self.last_step} "
                f"({where}); run the same command again to resume"
            )
        applied = int(state.step) - int(skipped_updates(state.opt_state))
        if applied <= 0 and self.last_step > 0:
            raise TrainingDiverged(
                f"{self.workdir}: no update was applied in {int(state.step)} (every gradient was non-finite); "
                f"nothing exported"
            )
        summary = {"steps": self.step, **summary}
        if self.config.train.export_hf:
            summary["hf_final"] = str(self._export(state.params, "hf_final"))
            best_step = self._checkpointer.best_step()
            if best_step is not None:
                best_state, _ = self._checkpointer.restore(best_step, state, kind="best")
                summary["hf_best"] = str(self._export(best_state.params, "hf_best"))
                summary["best_step"] = best_step
        if jax.process_index() == 0:
            try:
                (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
            except OSError as err:
                raise storage_error(str(self.workdir / "summary.json"), err) from err
        return summary

    def _export(self, params, name: str) -> Path:
        return save_hf(
            nnx.merge(self.graphdef, params),
            self.model_config,
            self.workdir / name,
            tokenizer_dir=self.config.model.path,
            overwrite=True,
            run_workdir=self.workdir,
            extra_files=export_files(self.config.model.prompt, self.config.model.chat_template),
        )

    def _close_metrics(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            self._check_updates(self._train_log.flush())
        finally:
            writer.close()
