"""Workdir hygiene shared by the stages: writable before anything starts, one run (config and process) per workdir."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

from etils import epath

from gift_jax.config_io import ConfigError, from_dict, save_config, to_dict
from gift_jax.storage import as_path, is_url


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
        raise PermissionError(f"{directory}: workdir is not writable ({err.strerror or err})") from None
    return directory


def _check_object_store_writable(url: str | os.PathLike) -> epath.Path:
    directory = as_path(url)
    probe = directory / f".write_probe_{uuid.uuid4().hex}"  # unique: every process of a run probes at once
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{directory}: workdir is not writable ({err.strerror or err})") from None
    return directory


def upgrade_run_config(data: dict) -> dict:
    """A run config as saved by an earlier version, in today's layout: the init stage kept `chat_template`
    under `data` (both stages now keep it under `model`). Sections added since take their defaults."""
    if "chat_template" in data.get("data", {}):
        data = {**data, "data": dict(data["data"]), "model": dict(data.get("model", {}))}
        data["model"]["chat_template"] = data["data"].pop("chat_template")
    return data


def _same_config_in_older_layout(previous: dict, config) -> bool:
    try:
        return from_dict(type(config), upgrade_run_config(previous)) == config
    except ConfigError:
        return False


def claim_workdir(workdir: Path, config) -> None:
    """Saves the config; a workdir holding a *different* run's config is refused (never overwritten)."""
    path = as_path(workdir) / "config.json"
    resolved = to_dict(config)
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != resolved and _same_config_in_older_layout(previous, config):
            save_config(config, path)  # the same run, its config rewritten in today's layout
            return
        if previous != resolved:
            changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
            raise WorkdirRefused(
                f"{path}: this workdir belongs to a run with a different config (sections {changed} "
                f"differ); use a fresh --workdir or the same config to resume"
            )
        return
    save_config(config, path)


class WorkdirRefused(ValueError):
    """This workdir cannot take this run (another run's config, or a live run holds it)."""


class WorkdirBusyError(WorkdirRefused):
    """Another live run holds the workdir."""


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
