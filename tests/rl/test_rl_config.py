"""RL-stage configs are validated before anything runs: each impossible setting is named."""

import json
import re
from pathlib import Path

import pytest

from gift_jax.config_io import load_config
from gift_jax.rl.config import RLSizes, RLStageConfig, validate_rl_config
from tests.helpers import rl_overrides, write_rl_jsonl


@pytest.fixture()
def overrides(tiny_run_inputs, tmp_path):
    return lambda **extra: rl_overrides(tiny_run_inputs["model"], write_rl_jsonl(tmp_path / "rl.jsonl", 8), **extra)


def test_the_tiny_config_validates_and_derives_sizes(overrides):
    sizes = validate_rl_config(load_config(RLStageConfig, None, overrides(**{"algo.method": "relift"})), num_devices=8)
    # 8 prompts x 4 rollouts in mini-batches of 4 prompts (16 rows) over 8 devices x 1 row
    assert sizes == RLSizes(num_micro=2, mini_batches=2, relift_micro=2)


@pytest.mark.parametrize("relift_batch, micro_per_device, expected", [(16, 2, 1), (48, 4, 2), (24, 2, 3), (40, 2, 5)])
def test_relift_updates_use_the_fewest_micro_batches_that_fit(overrides, relift_batch, micro_per_device, expected):
    config = load_config(
        RLStageConfig,
        None,
        overrides(
            **{
                "algo.method": "relift",
                "algo.relift_batch": relift_batch,
                "train.micro_batch_per_device": micro_per_device,
                "algo.mini_batch_prompts": 8,
                "train.prompts_per_step": 8,
            }
        ),
    )
    assert validate_rl_config(config, num_devices=8).relift_micro == expected


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"algo.mini_batch_prompts": 3}, r"prompts_per_step=8 is not divisible by algo.mini_batch_prompts=3"),
        (
            {"rollout.group_size": 3, "algo.mini_batch_prompts": 2, "train.prompts_per_step": 2},
            r"2 prompts x 3 rollouts = 6 rows is not divisible by batch devices \(8\)",
        ),
        (
            {"algo.method": "relift", "algo.relift_batch": 12},
            r"relift_batch=12 is not divisible by batch devices \(8\)$",
        ),
        ({"algo.kl_coef": 0.1}, r"kl_coef > 0 needs model.base_path"),
        ({"rollout.group_size": 1}, r"group_size must be >= 2"),
        ({"algo.method": "ppo"}, r"algo.method='ppo' is not one of"),
        ({"algo.agg_mode": "mean"}, r"--set algo.agg_mode=mean: 'mean' is not one of"),
        ({"mesh.fsdp": 3, "mesh.data": 2}, r"needs 6 devices but 8 are available"),
        ({"data.val_file": "/nonexistent/val.jsonl"}, r"data.val_file: /nonexistent/val.jsonl does not exist"),
    ],
)
def test_impossible_settings_are_named(overrides, extra, message):
    # Ranges fail while loading (the loader names the --set, or the section: "rollout: ..."); the checks
    # that need the devices or the files fail in validate_rl_config.
    with pytest.raises(ValueError, match=r"^(invalid RL-stage config|config: |--set |[a-z]+: )") as err:
        validate_rl_config(load_config(RLStageConfig, None, overrides(**extra)), num_devices=8)
    assert re.search(message, str(err.value)), str(err.value)


def test_rl_prompts_with_a_malformed_ground_truth_are_refused_naming_file_and_row(tmp_path):
    """An unterminated `\\boxed{` in the answer column fails when the prompts are read, not mid-scoring."""
    from gift_jax.rl.trainer import run_rl_stage

    toy_base = Path(__file__).resolve().parents[2] / "experiments" / "toy_base"
    rows = [{"prompt": f"{i}+{i}=?", "answer": str(2 * i)} for i in range(1, 8)]
    rows[3]["answer"] = "\\boxed{8"
    train = tmp_path / "rl.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = load_config(RLStageConfig, None, rl_overrides(toy_base, train))
    with pytest.raises(ValueError, match=rf"{train}.*row 3"):
        run_rl_stage(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
