"""A full disk on every write path (checkpoint, metrics, TensorBoard, export): the run ends at once with one
`StorageError` naming the file and the OS's reason, releases the workdir, keeps the previous checkpoint
usable, and resumes once there is space. Injected ENOSPC in-process for each path, and a real full disk
(a small tmpfs) for a whole command when this machine lets the tests mount one."""

import errno
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import orbax.checkpoint as ocp
import pytest
from tensorboardX.event_file_writer import EventsWriter

from gift_jax.config_io import load_config
from gift_jax.errors import RunFailure, StorageError
from gift_jax.models import hf_io
from gift_jax.runtime.workdir import WorkdirLock
from gift_jax.storage import Appender
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage
from tests.helpers import init_overrides

pytestmark = pytest.mark.slow  # init runs, each cut by a full disk and resumed

REPO = Path(__file__).resolve().parents[2]
NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def _full_after(calls: int, original, *, only=lambda *args: True):
    """`original` that fails with ENOSPC from its `calls + 1`-th matching call on."""
    count = {"n": 0}

    def write(*args, **kwargs):
        if only(*args):
            count["n"] += 1
            if count["n"] > calls:
                raise NO_SPACE
        return original(*args, **kwargs)

    return write


def _is_metrics_file(appender, *args):
    return appender.path.name == "metrics.jsonl"


# write path -> (object, its writing function, matching calls that still succeed, which calls count)
PATHS = {
    "checkpoint": (ocp.CheckpointManager, "save", 1, {}),  # step 2 saved, step 4 not
    "metrics": (Appender, "write", 3, {"only": _is_metrics_file}),
    "tensorboard": (EventsWriter, "write_event", 20, {}),
    "export": (hf_io, "save_file", 1, {}),  # hf_final written, hf_best not
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_disk_full_on_each_write_path_ends_the_run_cleanly_and_it_resumes(tiny_run_inputs, tmp_path, monkeypatch, path):
    overrides = init_overrides(tiny_run_inputs, **{"train.checkpoint_every": 2, "train.export_hf": True})
    config = load_config(InitStageConfig, None, overrides)
    owner, name, calls, options = PATHS[path]
    monkeypatch.setattr(owner, name, _full_after(calls, getattr(owner, name), **options))
    with pytest.raises(StorageError, match="No space left on device") as failure:
        run_init_stage(config, tmp_path / "run")
    assert str(tmp_path / "run") in str(failure.value)  # names the file or folder it could not write
    WorkdirLock(tmp_path / "run").acquire().release()  # the workdir was released
    monkeypatch.undo()  # space freed
    summary = run_init_stage(config, tmp_path / "run")
    assert summary["steps"] == 6 and Path(summary["hf_best"], "model.safetensors").is_file()
    assert not list((tmp_path / "run").glob(".hf_*"))  # no temporary export folder left


@pytest.fixture
def small_disk(tmp_path):
    """A 2.5 MiB tmpfs (a run's data and two checkpoints fit, a third does not); skipped where mounting is
    not allowed. Yields (mount point, grow()) where grow() frees space by enlarging it."""
    mount = tmp_path / f"disk_{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2560k", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-ENOSPC tests cover every write path")
    try:
        yield mount, lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk_ends_the_command_with_one_error_line_and_it_resumes(tiny_run_inputs, small_disk):
    mount, grow = small_disk
    overrides = init_overrides(tiny_run_inputs, **{"train.checkpoint_every": 1, "train.epochs": 3})
    cmd = [sys.executable, str(REPO / "experiments" / "init_stage.py"), "--workdir", str(mount / "run")]
    cmd += [arg for o in overrides for arg in ("--set", o)]
    full = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert full.returncode == RunFailure.exit_status, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last and str(mount) in last
    grow()
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from loop step " in resumed.stdout and "'steps': 9" in resumed.stdout
