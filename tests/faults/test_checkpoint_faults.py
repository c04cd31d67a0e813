"""Damaged checkpoints, half-written checkpoints, failed writes and unwritable workdirs."""

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gift_jax.errors import RunFailure
from gift_jax.runtime.checkpoint import Checkpointer, CheckpointRestoreError, CheckpointWriteError
from gift_jax.runtime.workdir import check_writable


def _tree(value):
    return {"w": jnp.full((4, 4), float(value)), "b": {"v": jnp.arange(3.0) + value}}


def _saved(directory, steps=(1, 2)):
    checkpointer = Checkpointer(directory)
    for step in steps:
        checkpointer.save(step, _tree(step), {"step": step})
    return checkpointer


def _data_files(step_dir: Path):
    return [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_latest_falls_back_to_previous_with_warning(tmp_path, capsys, damage):
    _saved(tmp_path).close()
    latest = tmp_path / "periodic" / "2"
    for path in _data_files(latest):
        data = path.read_bytes()
        if damage == "delete":
            path.unlink()
        else:
            path.write_bytes(data[: len(data) // 3] if damage == "truncate" else os.urandom(len(data)))
    step, state, meta = Checkpointer(tmp_path).restore_latest(_tree(0))
    assert step == 1 and meta == {"step": 1}
    np.testing.assert_array_equal(state["w"], np.full((4, 4), 1.0))
    warning = capsys.readouterr().out
    assert str(latest) in warning and str(tmp_path / "periodic" / "1") in warning


def test_half_written_checkpoint_is_never_picked_up(tmp_path):
    _saved(tmp_path).close()
    # What a process killed inside orbax's save leaves behind: a temporary folder, never renamed.
    partial = tmp_path / "periodic" / "3.orbax-checkpoint-tmp-1700000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text("{")
    checkpointer = Checkpointer(tmp_path)
    assert checkpointer.steps() == [1, 2]
    step, _, _ = checkpointer.restore_latest(_tree(0))
    assert step == 2
    assert not partial.exists()  # cleaned up on start


def test_a_read_only_reader_leaves_a_live_runs_checkpoints_alone(tmp_path):
    _saved(tmp_path).close()
    in_progress = tmp_path / "periodic" / "3.orbax-checkpoint-tmp-1700000000"  # the trainer is writing step 3
    (in_progress / "state").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    reader = Checkpointer(tmp_path, read_only=True)  # e.g. export_hf.py / evaluate.py on a running run
    assert reader.steps() == [1, 2]
    reader.restore(2, _tree(0))
    reader.close()
    assert sorted(tmp_path.rglob("*")) == before  # nothing cleaned up, nothing created


def test_failed_write_is_reported_and_previous_stays_usable(tmp_path, monkeypatch):
    checkpointer = _saved(tmp_path, steps=(1,))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"periodic: could not write step 2 .*No space left"):
        checkpointer.save(2, _tree(2), {"step": 2})
    monkeypatch.undo()
    step, state, _ = Checkpointer(tmp_path).restore_latest(_tree(0))
    assert step == 1 and float(state["w"][0, 0]) == 1.0


def test_unwritable_workdir_is_a_clear_error_before_anything_starts(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"a_file/run: workdir is not writable"):
        check_writable(blocker / "run")


def test_bytes_flipped_in_place_fall_back_to_the_previous_step_naming_both(tmp_path, capsys):
    _saved(tmp_path).close()
    latest = tmp_path / "periodic" / "2"
    # state/d/ holds the arrays orbax reads (ocdbt.process_*/d/ are the per-process files merged into it);
    # flip one byte in the middle of each (sizes and names unchanged).
    (target,) = (latest / "state" / "d").iterdir()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    step, state, _ = Checkpointer(tmp_path).restore_latest(_tree(0))
    assert step == 1
    np.testing.assert_array_equal(state["w"], np.full((4, 4), 1.0))
    warning = capsys.readouterr().out
    assert str(latest) in warning and str(tmp_path / "periodic" / "1") in warning


def test_a_step_with_non_finite_values_is_never_restored(tmp_path, capsys):
    checkpointer = _saved(tmp_path)
    with pytest.raises(RunFailure, match=r"refusing to save step 3: .*non-finite values in w"):
        checkpointer.save(3, {"w": jnp.full((4, 4), jnp.nan), "b": {"v": jnp.zeros(3)}}, {"step": 3})
    checkpointer.close()
    assert Checkpointer(tmp_path).restore_latest(_tree(0))[0] == 2


def test_edited_metadata_is_caught_by_its_checksum(tmp_path, capsys):
    _saved(tmp_path).close()
    meta = next((tmp_path / "periodic" / "2").rglob("metadata"), None) or next(
        p for p in (tmp_path / "periodic" / "2" / "meta").rglob("*") if p.is_file()
    )
    meta.write_text(meta.read_text().replace('"step": 2', '"step": 7'))
    assert Checkpointer(tmp_path).restore_latest(_tree(0))[0] == 1
    assert "metadata does not match its checksum" in capsys.readouterr().out


def test_no_restorable_step_is_one_error_naming_each(tmp_path):
    _saved(tmp_path).close()
    for step in (1, 2):
        for path in _data_files(tmp_path / "periodic" / str(step)):
            path.unlink()
    with pytest.raises(CheckpointRestoreError) as err:
        Checkpointer(tmp_path).restore_latest(_tree(0))
    message = str(err.value)
    assert message.startswith(f"no checkpoint under {tmp_path} can be restored")
    assert str(tmp_path / "periodic" / "1") in message and str(tmp_path / "periodic" / "2") in message
    assert "\n" not in message
