"""orbax checkpoints for the stages: periodic, final and best-by-metric, with safe resume.

Layout under `directory`: `periodic/<step>/` (the last `max_to_keep`) and `best/<step>/` (one).
Each step holds `state` (the training pytree) and `meta` (JSON: data-iterator state, RNG seed
material, scores, ...) with the step's manifest inside (`gift_jax.runtime.manifest`: checksums of
every array and of the metadata). orbax writes a step into a temporary folder and renames it when
complete, so a run killed mid-save never leaves a step that looks finished. Every restore is checked
against the manifest; `restore_latest` falls back to the previous step, with a warning naming both,
when the newest one is missing files, cannot be decoded, or differs from its manifest (bytes flipped
in place, non-finite values). A best step is written before the periodic step of the same number, so
metadata never names a best step that is not on disk.
`directory` may be an object-store URL (`gs://...`); orbax writes there itself (tensorstore's GCS
driver for the arrays, epath for the rest).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from gift_jax.errors import InputError, RunFailure, StorageError, io_reason
from gift_jax.runtime.manifest import MANIFEST_KEY, ManifestMismatch, state_manifest, verify_restored
from gift_jax.storage import as_path, is_url

log = logging.getLogger(__name__)


class CheckpointWriteError(StorageError):
    """A checkpoint could not be written; earlier checkpoints are untouched."""


class CheckpointRestoreError(InputError):
    """No checkpoint of a workdir can be restored (each one named with its reason)."""


class _Quiet(logging.Filter):
    """Drops absl / orbax / asyncio log records while a step is probed or saved: a failure is reported once, by us."""

    def filter(self, record):
        return False


@contextlib.contextmanager
def _quiet_orbax():
    loggers = [logging.getLogger(name) for name in ("", "absl", "orbax", "asyncio")]
    quiet = _Quiet()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


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
        """Writes step `step` as the single best one (when `best`), then as a periodic checkpoint.

        The best step comes first: a kill between the two leaves a best step that no periodic metadata
        names yet (the resumed run redoes the step), never metadata naming a best step that is not there.
        Raises CheckpointWriteError (naming the folder) when a write fails, e.g. disk full; the previous
        checkpoints remain restorable.
        """
        try:
            manifest = state_manifest(state, meta)
        except ManifestMismatch as err:
            raise RunFailure(f"{self.directory}: refusing to save step {step}: {err}") from None
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({**meta, MANIFEST_KEY: manifest})
        )
        managers = ([self._best] if best else []) + ([self._periodic] if periodic else [])
        for manager in managers:
            if step in manager.all_steps():
                continue
            try:
                with _quiet_orbax():
                    try:
                        manager.save(step, args=args, force=True)
                        manager.wait_until_finished()
                    finally:
                        gc.collect()  # a failed save's orphaned futures report now, muted, not at exit
            except Exception as err:  # orbax surfaces OSError wrapped in its own types
                raise CheckpointWriteError(
                    f"{manager.directory}: could not write step {step} ({io_reason(err)})"
                ) from err

    # -- restoring --------------------------------------------------------------------------------
    def steps(self, kind: str = "periodic") -> list[int]:
        return sorted(self._manager(kind).all_steps())

    def restore(self, step: int, abstract_state: Any, kind: str = "periodic") -> tuple[Any, dict[str, Any]]:
        """(state, meta) of one step, checked against its manifest; `abstract_state` gives structure,
        dtypes and shardings. Raises `ManifestMismatch` when the step differs from what was saved."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        restored = self._manager(kind).restore(step, args=args)
        meta = dict(restored["meta"])
        manifest = meta.pop(MANIFEST_KEY, None)
        verify_restored(restored["state"], meta, manifest)
        return restored["state"], meta

    def meta(self, step: int, kind: str = "periodic") -> dict[str, Any]:
        """Only the metadata of one step (its loop step, data position, scores, ...)."""
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        meta = dict(self._manager(kind).restore(step, args=args)["meta"])
        meta.pop(MANIFEST_KEY, None)
        return meta

    def restore_params(self, step: int, abstract_params: Any, kind: str = "periodic") -> Any:
        """Only `state.params` of one step (orbax partial restore: the optimizer state is never read),
        checked against the step's manifest.

        `abstract_params`: `jax.ShapeDtypeStruct`s (with shardings) in the structure of the params.
        """
        item = {"params": abstract_params}
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
            ),
            meta=ocp.args.JsonRestore(),
        )
        try:
            with _quiet_orbax():
                restored = self._manager(kind).restore(step, args=args)
            meta = dict(restored["meta"])
            manifest = meta.pop(MANIFEST_KEY, None)
            verify_restored(restored["state"], meta, manifest)
        except Exception as err:  # corrupt files raise many different error types
            raise CheckpointRestoreError(
                f"{self.directory / kind / str(step)}: unreadable ({type(err).__name__}: {_first_line(err)})"
            ) from None
        return restored["state"]["params"]

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest readable periodic step as `(step, state, meta)`, or None when there is none.

        An unreadable step (missing or truncated files, bytes that differ from its manifest) is skipped
        with a warning that names it and the step used instead; when no step can be restored,
        `CheckpointRestoreError` names each one with its reason.
        """
        failed: list[str] = []
        for step in reversed(self.steps()):
            try:
                with _quiet_orbax():
                    state, meta = self.restore(step, abstract_state)
            except Exception as err:  # corrupt files raise many different error types
                failed.append(f"{self.directory / 'periodic' / str(step)} ({type(err).__name__}: {_first_line(err)})")
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
            raise CheckpointRestoreError(
                f"no checkpoint under {self.directory} can be restored: {'; '.join(failed)}. Move the "
                f"checkpoints folder aside to start over, or use a fresh --workdir"
            )
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


def _first_line(err: BaseException, limit: int = 300) -> str:
    """An error's first line, shortened: orbax's messages can carry whole tracebacks."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."
