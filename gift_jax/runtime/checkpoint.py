"""orbax checkpoints for the stages: periodic, final and best-by-metric, with safe resume.

Layout under `directory`: `periodic/<step>/` (the last `max_to_keep`) and `best/<step>/` (one).
Each step holds `state` (the training pytree) and `meta` (JSON: data-iterator state, RNG seed
material, best metric so far, ...). orbax writes a step into a temporary folder and renames it when
complete, so a run killed mid-save never leaves a step that looks finished; `restore_latest` also
falls back to the previous step, with a warning naming both, when the newest one cannot be read.
`directory` may be an object-store URL (`gs://...`); orbax writes there itself (tensorstore's GCS
driver for the arrays, epath for the rest).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from gift_jax.storage import as_path, is_url

log = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; earlier checkpoints are untouched."""


def _manager(path: Path | epath.Path, max_to_keep: int, read_only: bool) -> ocp.CheckpointManager:
    if read_only:  # touches nothing: a live run's half-written step stays where it is
        options = ocp.CheckpointManagerOptions(
            read_only=True, create=False, cleanup_tmp_directories=False, save_interval_steps=0, max_to_keep=None
        )
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
    return ocp.CheckpointManager(path, options=options)


class Checkpointer:
    """Saves / restores `(state pytree, meta dict)` pairs by step."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, read_only: bool = False):
        """`read_only`: for readers of another (possibly running) run's checkpoints; never writes or cleans."""
        directory = as_path(directory)
        self.directory = directory if is_url(directory) else directory.absolute()
        self._periodic = _manager(self.directory / "periodic", max_to_keep, read_only)
        self._best = _manager(self.directory / "best", 1, read_only)

    # -- saving -----------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: dict[str, Any], *, best: bool = False, periodic: bool = True) -> None:
        """Writes step `step` as a periodic checkpoint and, when `best`, as the single best one.

        Raises CheckpointWriteError (naming the folder) when the write fails, e.g. disk full; the
        previous checkpoints remain restorable.
        """
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        managers = ([self._periodic] if periodic else []) + ([self._best] if best else [])
        for manager in managers:
            if step in manager.all_steps():
                continue
            try:
                manager.save(step, args=args, force=True)
                manager.wait_until_finished()
            except Exception as err:  # orbax surfaces OSError wrapped in its own types
                raise CheckpointWriteError(f"{manager.directory}: could not write step {step} ({err})") from err

    # -- restoring --------------------------------------------------------------------------------
    def steps(self, kind: str = "periodic") -> list[int]:
        return sorted(self._manager(kind).all_steps())

    def restore(self, step: int, abstract_state: Any, kind: str = "periodic") -> tuple[Any, dict[str, Any]]:
        """(state, meta) of one step; `abstract_state` gives structure, dtypes and shardings."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        restored = self._manager(kind).restore(step, args=args)
        return restored["state"], dict(restored["meta"])

    def meta(self, step: int, kind: str = "periodic") -> dict[str, Any]:
        """Only the metadata of one step (its loop step, data position, scores, ...)."""
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return dict(self._manager(kind).restore(step, args=args)["meta"])

    def restore_params(self, step: int, abstract_params: Any, kind: str = "periodic") -> Any:
        """Only `state.params` of one step (orbax partial restore: the optimizer state is never read).

        `abstract_params`: `jax.ShapeDtypeStruct`s (with shardings) in the structure of the params.
        """
        item = {"params": abstract_params}
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
            )
        )
        return self._manager(kind).restore(step, args=args)["state"]["params"]

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest readable periodic step as `(step, state, meta)`, or None when there is none.

        An unreadable step (truncated or corrupted files) is skipped with a warning that names it and
        the step used instead.
        """
        failed: list[str] = []
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as err:  # corrupt files raise many different error types
                failed.append(f"{self.directory / 'periodic' / str(step)} ({type(err).__name__}: {err})")
                continue
            if failed:
                message = (
                    f"checkpoint(s) unreadable: {'; '.join(failed)}; resuming from "
                    f"{self.directory / 'periodic' / str(step)} instead"
                )
                log.warning(message)
                if jax.process_index() == 0:
                    print(f"WARNING: {message}", flush=True)
            return step, state, meta
        if failed:
            raise RuntimeError(f"no readable checkpoint under {self.directory}: {'; '.join(failed)}")
        return None

    def best_step(self) -> int | None:
        steps = self.steps("best")
        return steps[-1] if steps else None

    def _manager(self, kind: str) -> ocp.CheckpointManager:
        if kind not in ("periodic", "best"):
            raise ValueError(f"checkpoint kind {kind!r}: expected 'periodic' or 'best'")
        return self._periodic if kind == "periodic" else self._best

    def close(self) -> None:
        self._periodic.close()
        self._best.close()
