"""The run object both stages train inside: workdir, models, restore, metrics, checkpoints, exports.

    with StageRun(workdir, config, desc="init[gift]", best="min") as run:
        graphdef, params = run.load_policy()
        state = init_train_state(params, tx, run.mesh)
        state, meta = run.resume(state, stop_at=stop_at)
        while run.step < stop_at:
            ...                                    # the stage's own work
            run.step += 1
            run.log(device_metrics, **host_values)
            run.checkpoint(state, meta, score=val_loss)
        return run.finish(state, summary)

Checkpoints are numbered by loop step (the step metrics, `max_steps`, `checkpoint_every` and
`--step` count); the optimizer's own update count is kept in each checkpoint's metadata. The run
holds the workdir lock from entry to exit and closes metrics and checkpoints however it ends. Bad
input found while the run loads (until `resume` returns) is marked as a loading error, which the
command line reports as one line; an error once training is under way keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gift_jax.config_io import ConfigError
from gift_jax.models import load_hf, save_hf
from gift_jax.parallel import make_mesh, replicated
from gift_jax.parallel.activations import activation_sharding
from gift_jax.runtime.checkpoint import Checkpointer, CheckpointWriteError
from gift_jax.runtime.metrics import LaggedTrainMetrics, MetricWriter
from gift_jax.runtime.train_state import TrainState
from gift_jax.runtime.workdir import WorkdirLock, check_writable, claim_workdir

# Bad configs, inputs and workdirs: the command line reports these as one line when they happen while
# a run loads (config, data, models, checkpoints), not once training is under way.
USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, PermissionError, FileExistsError)


@contextlib.contextmanager
def loading_phase():
    """Marks user errors raised inside as loading errors (`is_loading_error`)."""
    try:
        yield
    except USER_ERRORS as err:
        err.raised_while_loading = True
        raise


def is_loading_error(err: BaseException) -> bool:
    return getattr(err, "raised_while_loading", False)


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


class StageRun:
    """One stage's run in one workdir (a context manager; see the module docstring)."""

    def __init__(self, workdir, config, *, desc: str, best: Literal["min", "max"] = "min"):
        """`config` has `model` (`ModelSection`), `train` (a `RunSection`) and `mesh` sections; `best`
        says whether a lower or a higher validation score is better."""
        with loading_phase():
            self.workdir = check_writable(workdir)
        self.config, self.desc, self.best = config, desc, best
        self.mesh = make_mesh(config.mesh)
        self.step = 0  # loop steps done
        self.best_score: float | None = None
        self.graphdef = self.model_config = None
        self._lock = WorkdirLock(self.workdir)
        self._checkpointer: Checkpointer | None = None
        self._writer: MetricWriter | None = None
        self._train_log: LaggedTrainMetrics | None = None
        self._loading = True  # until `resume` returns

    def __enter__(self) -> StageRun:
        if jax.process_index() == 0:
            with loading_phase():
                self._lock.acquire()
                try:
                    claim_workdir(self.workdir, self.config)
                except BaseException:
                    self._lock.release()
                    raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._loading and isinstance(exc, USER_ERRORS):
            exc.raised_while_loading = True
        with contextlib.ExitStack() as closing:  # every close runs even if an earlier one raises
            closing.callback(self._lock.release)
            if self._checkpointer is not None:
                closing.callback(self._checkpointer.close)
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

    # -- restore, log, checkpoint -----------------------------------------------------------------
    def resume(self, state: TrainState, *, stop_at: int) -> tuple[TrainState, dict]:
        """Restores the newest checkpoint into `state`'s layout (if any) and opens the metric sinks.

        Returns `(state, the stage's metadata)` ({} for a fresh run) and sets `self.step`.
        """
        t = self.config.train
        self._checkpointer = Checkpointer(self.workdir / "checkpoints", max_to_keep=t.max_to_keep)
        meta: dict = {}
        restored = self._checkpointer.restore_latest(state)
        if restored is not None:
            number, state, meta = restored
            if meta.get("step", number) != number:
                raise ValueError(
                    f"{self.workdir / 'checkpoints'}: checkpoint {number} holds loop step {meta['step']}; it was "
                    f"written when checkpoints were numbered by optimizer update. Resume it with the gift-jax "
                    f"version that wrote it, or start a fresh --workdir"
                )
            self.step = number
            # Older init-stage checkpoints call the best score "best_val_loss".
            best = meta.get("best_score", meta.get("best_val_loss"))
            self.best_score = None if best is None or not math.isfinite(best) else best
        self._writer = MetricWriter(
            self.workdir, total_steps=stop_at, initial_step=self.step, log_every=t.log_every, desc=self.desc
        )
        self._train_log = LaggedTrainMetrics(self._writer)
        self._loading = False
        return state, meta

    def log(self, device_metrics: dict, **host_values: float) -> None:
        """This step's training metrics; fetched from the device once the next step is dispatched."""
        self._train_log.push(self.step, device_metrics, **host_values)

    def write(self, values: dict, *, prefix: str) -> None:
        """Host values logged now (after any pending training metrics), e.g. prefix="val/"."""
        self._train_log.flush()
        self._writer.write(self.step, values, prefix=prefix)

    @contextlib.contextmanager
    def host_work(self):
        """Wraps validation / checkpointing: pending metrics are logged first, its time is left out of tokens/s."""
        self._train_log.flush()
        yield
        self._train_log.restart_clock()

    def improves(self, score: float | None) -> bool:
        if score is None:
            return False
        return self.best_score is None or (score < self.best_score if self.best == "min" else score > self.best_score)

    def checkpoint(self, state: TrainState, meta: dict, *, score: float | None = None, periodic: bool = True) -> None:
        """Saves loop step `self.step` (periodic, and as the best one when `score` improves on the best so far).

        `periodic=False` saves only an improvement (a state the data position cannot describe, e.g.
        between PSFT's mini-batches, is still exported as hf_best). A failed write is logged as
        `error/checkpoint_write_failed` and training goes on: the previous checkpoint stays usable.
        """
        if score is not None and jax.process_count() > 1:
            # Every process must take the same save decision (orbax saves are collective); a score scored
            # on the host (RL's avg@k, wall-clock reward timeouts) could differ, so process 0's decides.
            score = float(multihost_utils.broadcast_one_to_all(np.float32(score)))
        improved = self.improves(score)
        if improved:
            self.best_score = score
        if not (periodic or improved):
            return
        with self.host_work():
            full_meta = {
                **meta,
                "step": self.step,
                "optimizer_step": int(state.step),
                "score": score,
                "best_score": self.best_score,
            }
            try:
                self._checkpointer.save(self.step, state, full_meta, best=improved, periodic=periodic)
            except CheckpointWriteError as err:
                self._writer.write(self.step, {"checkpoint_write_failed": 1.0}, prefix="error/")
                print(f"ERROR: {err}", flush=True)

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, state: TrainState, summary: dict) -> dict:
        """Closes the metric sinks, exports hf_final / hf_best (when `train.export_hf`), writes summary.json."""
        self._close_metrics()
        summary = {"steps": self.step, **summary}
        if self.config.train.export_hf:
            summary["hf_final"] = str(self._export(state.params, "hf_final"))
            best_step = self._checkpointer.best_step()
            if best_step is not None:
                best_state, _ = self._checkpointer.restore(best_step, state, kind="best")
                summary["hf_best"] = str(self._export(best_state.params, "hf_best"))
                summary["best_step"] = best_step
        if jax.process_index() == 0:
            (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _export(self, params, name: str) -> Path:
        return save_hf(
            nnx.merge(self.graphdef, params),
            self.model_config,
            self.workdir / name,
            tokenizer_dir=self.config.model.path,
            overwrite=True,
        )

    def _close_metrics(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            self._train_log.flush()
        finally:
            writer.close()
