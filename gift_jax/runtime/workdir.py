"""Workdir hygiene shared by the stages: writable before anything starts, one live process per workdir
(`WorkdirLock`), and one run per set of checkpoints (`check_resume`: the config's identity keys and the
data files' fingerprints must match the run that wrote them)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

from etils import epath

from gift_jax.config_io import ConfigError, from_dict, to_dict
from gift_jax.errors import InputError
from gift_jax.storage import as_path, file_sha256, is_url, write_text_atomically


def check_writable(directory: str | os.PathLike) -> Path | epath.Path:
    """Creates `directory` and proves a file can be written there, or raises a clear error.

    A local path comes back as a `pathlib.Path`; an object-store URL (`gs://bucket/run`, see
    `gift_jax.storage`) as an `etils.epath.Path`, never as a local folder named `gs:`.
    """
    if is_url(directory):
        return _check_object_store_writable(directory)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # A uniquely named probe: every process of a multi-host run checks the same shared workdir at once.
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_probe_") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as err:
        raise WorkdirNotWritable(f"{directory}: workdir is not writable ({err.strerror or err})") from None
    return directory


def _check_object_store_writable(url: str | os.PathLike) -> epath.Path:
    directory = as_path(url)
    probe = directory / f".write_probe_{uuid.uuid4().hex}"  # unique: every process of a run probes at once
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise WorkdirNotWritable(f"{directory}: workdir is not writable ({err.strerror or err})") from None
    return directory


def upgrade_run_config(data: dict) -> dict:
    """A run config as saved by an earlier version, in today's layout: the init stage kept `chat_template`
    under `data` (both stages now keep it under `model`); runs saved before `model.prompt` existed
    prompted with the question alone (RL's `data.val_instruction`, an instruction for validation only,
    is gone: validation now prompts as training does). Sections added since take their defaults."""
    data = {**data, "data": dict(data.get("data", {})), "model": dict(data.get("model", {}))}
    if "chat_template" in data["data"]:
        data["model"]["chat_template"] = data["data"].pop("chat_template")
    data["model"].setdefault("prompt", {"instruction": None, "system_prompt": None})
    data["data"].pop("val_instruction", None)
    return data


class WorkdirNotWritable(InputError, PermissionError):
    """The workdir cannot be created or written (names it and the OS's reason)."""


class WorkdirRefused(InputError):
    """This workdir cannot take this run (another run's config, changed data, or a live run holds it)."""


class WorkdirBusyError(WorkdirRefused):
    """Another live run holds the workdir."""


CONFIG_FILE, INPUTS_FILE = "config.json", "inputs.json"


def has_checkpoints(workdir: str | os.PathLike) -> bool:
    """Whether any finished checkpoint step (periodic or best) lies in `workdir/checkpoints`."""
    root = as_path(workdir) / "checkpoints"
    return any(
        step.name.isdigit()
        for kind in ("periodic", "best")
        if (root / kind).is_dir()
        for step in (root / kind).iterdir()
    )


def resumable_keys(config) -> set[str]:
    """Dotted keys that may change when a run resumes: each section's `RESUMABLE` (intervals, limits,
    worker counts: how the run goes on, not what it computes)."""
    return {
        f"{field.name}.{name}"
        for field in dataclasses.fields(config)
        for name in getattr(type(getattr(config, field.name)), "RESUMABLE", ())
    }


def data_fingerprints(config) -> dict[str, dict[str, str]]:
    """`{"data.train_file": {"path", "sha256"}, ...}` of every data file the config names."""
    return {
        f"data.{field.name}": {"path": str(path), "sha256": file_sha256(path)}
        for field in dataclasses.fields(config.data)
        if field.name.endswith("_file") and (path := getattr(config.data, field.name)) is not None
    }


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _as_today(previous: dict, config) -> dict:
    """A saved config in today's layout with today's defaults for keys added since (as saved if it no
    longer parses, e.g. a key that was removed)."""
    try:
        return to_dict(from_dict(type(config), upgrade_run_config(previous)))
    except ConfigError:
        return previous


def check_resume(workdir, config, fingerprints: dict, *, allow_changed_data: bool = False) -> list[str]:
    """May `config` go on with the checkpoints in `workdir`? Returns the changed resumable keys as lines
    (`train.log_every: 10 -> 2`) and raises `WorkdirRefused` naming every other changed key with both
    values, or a data file whose fingerprint changed (unless `allow_changed_data`).

    A workdir without checkpoints takes any config: nothing saved depends on the old one (so a launch that
    failed while loading never blocks the corrected one)."""
    workdir = as_path(workdir)
    path = workdir / CONFIG_FILE
    if not has_checkpoints(workdir) or not path.exists():
        return []
    before, after = _flat(_as_today(json.loads(path.read_text()), config)), _flat(to_dict(config))
    changed = [(key, before.get(key), after.get(key)) for key in sorted(set(before) | set(after))]
    changed = [(key, old, new) for key, old, new in changed if old != new]
    allowed = resumable_keys(config)
    refused = [f"{key}: {old!r} -> {new!r}" for key, old, new in changed if key not in allowed]
    if refused:
        raise WorkdirRefused(
            f"{path}: this workdir holds checkpoints of a run with a different config; changed: "
            f"{'; '.join(refused)}. Resume with the saved values or use a fresh --workdir"
        )
    inputs = workdir / INPUTS_FILE
    saved = json.loads(inputs.read_text()) if inputs.exists() else {}
    moved = [key for key, value in fingerprints.items() if key in saved and saved[key]["sha256"] != value["sha256"]]
    if moved and not allow_changed_data:
        files = "; ".join(f"{key} ({fingerprints[key]['path']})" for key in moved)
        raise WorkdirRefused(
            f"{inputs}: the data changed since this run started: {files} holds different content. Restore the "
            f"original file, use a fresh --workdir, or pass --allow-changed-data to go on with the new data"
        )
    return [f"{key}: {old!r} -> {new!r}" for key, old, new in changed] + [f"{key}: new content" for key in moved]


def save_run_identity(workdir, config, fingerprints: dict) -> None:
    """Writes `config.json` and `inputs.json` (the data files' fingerprints), each replaced atomically."""
    workdir = as_path(workdir)
    write_text_atomically(workdir / CONFIG_FILE, json.dumps(to_dict(config), indent=2) + "\n")
    write_text_atomically(workdir / INPUTS_FILE, json.dumps(fingerprints, indent=2) + "\n")


class WorkdirLock:
    """One run per workdir: an exclusive `flock` on `workdir/run.lock`, which names its holder.

    The kernel drops the lock when its process ends however it ends (`kill -9` included), so a lock
    left by a killed run is taken over by the next launch without guessing whether a pid is alive.
    Process 0 of a multi-host run takes it; the other processes of that run share the workdir.

    An object-store workdir (`gs://...`) cannot be locked: there is no `flock`, and a lock object
    written there could not be told apart from one left by a killed run. The lock is then not taken
    and a warning says so; one run per such workdir is up to whoever launches it.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = as_path(workdir) / "run.lock"
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        if is_url(self.path):
            print(
                f"WARNING: {self.path.parent}: an object-store workdir cannot be locked (no flock there); "
                f"nothing stops a second run from using this workdir",
                flush=True,
            )
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if not isinstance(err, BlockingIOError):  # a file system without locks (some FUSE mounts)
                print(
                    f"WARNING: {self.path}: the file system refuses locks ({err.strerror or err}); "
                    f"nothing stops a second run from using this workdir",
                    flush=True,
                )
                self._fd = fd
                return self
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirBusyError(
                f"{self.path.parent}: another run is using this workdir (host {holder.get('host', '?')}, "
                f"pid {holder.get('pid', '?')}, started {holder.get('started', '?')}); wait for it to end or "
                f"use a different --workdir"
            ) from None
        record = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the file stays (unlinking it would race a waiting launch)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
