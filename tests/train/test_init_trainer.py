"""The init-stage loop: falling validation loss, bit-exact resume, exports, config validation."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gift_jax.config_io import load_config
from gift_jax.models import load_hf
from gift_jax.runtime.checkpoint import Checkpointer
from gift_jax.train.init_config import InitStageConfig, validate_init_config
from gift_jax.train.init_trainer import run_init_stage
from tests.helpers import init_overrides


def _config(inputs, **extra):
    return load_config(InitStageConfig, None, init_overrides(inputs, **extra))


def _final_params(workdir):
    checkpointer = Checkpointer(workdir / "checkpoints")
    step = checkpointer.steps()[-1]
    directory = workdir / "checkpoints" / "periodic" / str(step) / "state"
    restored = ocp.PyTreeCheckpointer().restore(directory)
    checkpointer.close()
    return step, restored["params"]


@pytest.mark.slow  # an init-stage run
def test_gift_run_lowers_validation_loss_and_exports(tiny_run_inputs, tmp_path):
    config = _config(tiny_run_inputs, **{"train.epochs": 3, "train.export_hf": True})
    summary = run_init_stage(config, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [line["val/val_loss"] for line in lines if "val/val_loss" in line]
    assert len(val) == 3 and val[-1] < val[0] - 0.2, val
    assert any("train/kl_to_base" in line for line in lines)
    assert summary["best_val_loss"] == pytest.approx(min(val))
    model, _ = load_hf(tmp_path / "hf_best")  # the export loads back through the real path
    assert (tmp_path / "hf_best" / "tokenizer.json").exists()
    assert (tmp_path / "tensorboard").is_dir() and (tmp_path / "config.json").exists()
    assert model(np.ones((1, 4), np.int32)).shape == (1, 4, 320)


@pytest.mark.slow  # an init-stage run
def test_stopped_and_resumed_run_is_bit_identical(tiny_run_inputs, tmp_path):
    config = _config(tiny_run_inputs, **{"train.checkpoint_every": 1, "train.eval_every": 100})
    run_init_stage(config, tmp_path / "straight", max_steps=5)
    run_init_stage(config, tmp_path / "resumed", max_steps=2)
    run_init_stage(config, tmp_path / "resumed", max_steps=5)
    step_a, params_a = _final_params(tmp_path / "straight")
    step_b, params_b = _final_params(tmp_path / "resumed")
    assert step_a == step_b == 5
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # an init-stage run
def test_workdir_of_another_run_is_refused(tiny_run_inputs, tmp_path):
    run_init_stage(_config(tiny_run_inputs), tmp_path, max_steps=1)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="different config"):
        run_init_stage(_config(tiny_run_inputs, **{"loss.beta": 9.0}), tmp_path, max_steps=2)
    assert (tmp_path / "config.json").read_text() == before


def test_impossible_batch_split_is_one_clear_message(tiny_run_inputs):
    config = _config(tiny_run_inputs, **{"train.global_batch": 12, "train.micro_batch_per_device": 1})
    with pytest.raises(ValueError, match=r"global_batch=12 is not divisible by batch devices \(8\)"):
        validate_init_config(config, num_devices=8)
    with pytest.raises(ValueError, match="needs 6 devices but 8"):
        validate_init_config(_config(tiny_run_inputs, **{"mesh.fsdp": 3, "mesh.data": 2}), num_devices=8)
    with pytest.raises(ValueError, match="loss.name='gfit' is not one of"):
        validate_init_config(_config(tiny_run_inputs, **{"loss.name": "gfit"}), num_devices=8)
