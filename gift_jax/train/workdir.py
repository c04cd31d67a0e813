"""Workdir hygiene shared by the training loops: writable before anything starts, one run per workdir."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gift_jax.config_io import save_config, to_dict


def check_writable(directory: str | os.PathLike) -> Path:
    """Creates `directory` and proves a file can be written there, or raises a clear error."""
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


def claim_workdir(workdir: Path, config) -> None:
    """Saves the config; a workdir holding a *different* run's config is refused (never overwritten)."""
    path = Path(workdir) / "config.json"
    resolved = to_dict(config)
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != resolved:
            changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
            raise ValueError(f"{path}: this workdir belongs to a run with a different config (sections {changed} "
                             f"differ); use a fresh --workdir or the same config to resume")
        return
    save_config(config, path)
