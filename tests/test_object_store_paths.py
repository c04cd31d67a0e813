"""Workdirs, metrics, HF folders and run checkpoints on `gs://` URLs, through an in-memory object store
(`tests/object_store.py`: the etils.epath -> fsspec route a bucket takes, without network)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from gift_jax.config_io import from_dict
from gift_jax.data import load_tokenizer
from gift_jax.models import CheckpointError, load_hf, save_hf
from gift_jax.runtime.checkpoint import Checkpointer
from gift_jax.runtime.metrics import MetricWriter
from gift_jax.runtime.run_checkpoints import is_run_workdir, read_run_model
from gift_jax.runtime.workdir import WorkdirLock, WorkdirRefused, check_resume, check_writable, save_run_identity
from gift_jax.storage import Appender, as_path, copy_file
from gift_jax.train.init_config import InitStageConfig
from tests.helpers import make_tiny_model_dir
from tests.object_store import in_memory_gcs


@pytest.fixture
def memory_gcs(monkeypatch):
    yield from in_memory_gcs(monkeypatch)


def _config(model_path: str) -> InitStageConfig:
    return from_dict(InitStageConfig, {"model": {"path": model_path}, "data": {"train_file": "gs://bucket/sft.jsonl"}})


def test_a_gs_workdir_is_created_in_the_store_not_as_a_local_folder(memory_gcs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workdir = check_writable("gs://bucket/runs/a")
    assert isinstance(workdir, epath.Path) and str(workdir) == "gs://bucket/runs/a"
    assert memory_gcs.isdir("gs://bucket/runs/a") and memory_gcs.ls("gs://bucket/runs/a") == []  # no probe left
    assert not (tmp_path / "gs:").exists()


def test_other_url_schemes_are_refused_by_name():
    with pytest.raises(ValueError, match="ftp://host/run: unsupported storage URL scheme 'ftp'"):
        check_writable("ftp://host/run")


def test_a_gs_workdir_keeps_its_run_config_and_refuses_another(memory_gcs, capsys):
    workdir = check_writable("gs://bucket/run")
    config = _config("gs://bucket/base")
    save_run_identity(workdir, config, {})
    assert check_resume(workdir, config, {}) == []  # the same run resuming
    assert read_run_model("gs://bucket/run") == config.model
    (workdir / "checkpoints" / "periodic" / "1").mkdir(parents=True)  # a checkpoint: the config is now fixed
    other = _config("gs://bucket/other")
    with pytest.raises(WorkdirRefused, match=r"gs://bucket/run/config.json: .*model.path: 'gs://bucket/base' ->"):
        check_resume(workdir, other, {})
    lock = WorkdirLock(workdir).acquire()  # no flock on an object store: said, not silently skipped
    lock.release()
    assert "gs://bucket/run: an object-store workdir cannot be locked" in capsys.readouterr().out


def test_metrics_on_gs_one_line_per_step_across_a_resume_and_tensorboard_events(memory_gcs):
    workdir = "gs://bucket/run"
    writer = MetricWriter(workdir, total_steps=10, enabled=True)
    for step in range(1, 6):
        writer.write(step, {"loss": float(step)}, prefix="train/")
    writer.close()
    resumed = MetricWriter(workdir, total_steps=10, initial_step=3, enabled=True)  # checkpoint at step 3
    for step in range(4, 7):
        resumed.write(step, {"loss": 10.0 + step}, prefix="train/")
    resumed.close()
    lines = [json.loads(line) for line in as_path(f"{workdir}/metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert [line["train/loss"] for line in lines[3:]] == [14.0, 15.0, 16.0]
    aside = as_path(f"{workdir}/metrics.superseded.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in aside] == [4, 5]
    events = memory_gcs.ls(f"{workdir}/tensorboard", detail=True)  # one file per writer, or one if within a second
    assert events and all("tfevents" in e["name"] and e["size"] > 0 for e in events)


def test_an_object_store_appender_uploads_on_flush_only_after_its_interval(memory_gcs):
    appender = Appender("gs://bucket/log.txt", upload_every_s=3600)
    appender.write("a\n")
    appender.flush()
    assert not memory_gcs.exists("gs://bucket/log.txt")  # not yet due
    appender.close()
    assert as_path("gs://bucket/log.txt").read_text() == "a\n"
    again = Appender("gs://bucket/log.txt", upload_every_s=0)
    again.write("b\n")
    again.flush()
    assert as_path("gs://bucket/log.txt").read_text() == "a\nb\n"


def test_save_hf_to_gs_and_load_hf_from_gs_give_the_same_weights(memory_gcs, tmp_path):
    make_tiny_model_dir(tmp_path / "hf")
    model, config = load_hf(tmp_path / "hf")
    out = save_hf(model, config, "gs://bucket/export", tokenizer_dir=tmp_path / "hf", max_shard_bytes=20_000)
    assert str(out) == "gs://bucket/export"
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in names and "tokenizer.json" in names and "config.json" in names
    with pytest.raises(FileExistsError, match="gs://bucket/export: exists and is not empty"):
        save_hf(model, config, "gs://bucket/export")
    again, again_config = load_hf("gs://bucket/export")
    assert again_config == config
    ids = jnp.arange(12).reshape(2, 6) % 50 + 3
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(model(ids)))
    text = "What is 2 + 3?"
    assert load_tokenizer("gs://bucket/export").encode(text) == load_tokenizer(tmp_path / "hf").encode(text)
    save_hf(model, config, "gs://bucket/export", overwrite=True)  # one shard now: the old shards are gone
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_a_broken_gs_model_folder_is_named_by_its_url(memory_gcs, tmp_path):
    make_tiny_model_dir(tmp_path / "hf")
    for file in (tmp_path / "hf").iterdir():
        copy_file(file, as_path(f"gs://bucket/model/{file.name}"))
    as_path("gs://bucket/model/model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"^gs://bucket/model/model.safetensors: unreadable safetensors file"):
        load_hf("gs://bucket/model")
    with pytest.raises(CheckpointError, match=r"gs://bucket/nothing/config.json: not found"):
        load_hf("gs://bucket/nothing")


def test_checkpoints_on_an_epath_and_a_run_workdir_found_and_read_on_gs(memory_gcs, tmp_path):
    # orbax itself cannot run on the in-memory store: on gs:// it asks the real service about the bucket
    # (google-cloud-storage) and writes arrays through tensorstore's GCS driver. So the checkpoint goes to a
    # local folder given as an epath (orbax's own path type), and the run folder, copied to the store, is
    # found and its config read through gs://.
    state = {"w": jnp.arange(6.0).reshape(2, 3)}
    local = Checkpointer(epath.Path(tmp_path / "run" / "checkpoints"))
    local.save(4, state, {"step": 4, "seed": 1})
    restored, meta = local.restore(4, state)
    assert local.steps() == [4] and meta == {"step": 4, "seed": 1}
    local.close()
    np.testing.assert_array_equal(restored["w"], state["w"])
    config = _config(str(tmp_path / "hf"))
    save_run_identity(tmp_path / "run", config, {})
    for file in (tmp_path / "run").rglob("*"):
        if file.is_file():
            target = as_path(f"gs://bucket/run/{file.relative_to(tmp_path / 'run')}")
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_file(file, target)
    assert is_run_workdir("gs://bucket/run") and not is_run_workdir("gs://bucket")
    assert read_run_model("gs://bucket/run") == config.model
