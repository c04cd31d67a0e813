"""The run object both stages share: best checkpoints and hf_best in both, the base in base_param_dtype,
everything closed and the workdir lock released when a run fails."""

import json

import jax
import jax.numpy as jnp
import pytest

from gift_jax.config_io import load_config
from gift_jax.errors import RunFailure
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.trainer import run_rl_stage
from gift_jax.runtime.checkpoint import Checkpointer
from gift_jax.runtime.run import StageRun
from gift_jax.runtime.workdir import WorkdirLock
from gift_jax.train import init_trainer
from gift_jax.train.init_config import InitStageConfig
from tests.helpers import init_overrides, rl_overrides, write_rl_jsonl


def _lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # a stage run
def test_rl_run_keeps_its_best_validation_step_as_hf_best(tiny_run_inputs, tmp_path):
    overrides = rl_overrides(
        tiny_run_inputs["model"],
        write_rl_jsonl(tmp_path / "rl.jsonl", 24),
        **{
            "data.val_file": write_rl_jsonl(tmp_path / "val.jsonl", 4, seed=1),
            "train.eval_every": 1,
            "train.eval_k": 2,
            "train.export_hf": True,
            "train.checkpoint_every": 100,
            "rollout.max_new_tokens": 8,
        },
    )
    summary = run_rl_stage(load_config(RLStageConfig, None, overrides), tmp_path / "run", max_steps=3)
    scores = {line["step"]: line["val/avg@2"] for line in _lines(tmp_path / "run") if "val/avg@2" in line}
    assert sorted(scores) == [1, 2, 3]
    best = max(scores, key=lambda step: (scores[step], -step))  # the first step reaching the best score
    assert summary["best_step"] == best and (tmp_path / "run" / "hf_best" / "config.json").is_file()
    checkpointer = Checkpointer(tmp_path / "run" / "checkpoints", read_only=True)
    assert checkpointer.steps("best") == [best] and checkpointer.steps() == [3]  # numbered by RL step
    checkpointer.close()


@pytest.mark.slow  # a stage run
def test_psft_improvement_between_mini_batches_reaches_hf_best(tiny_run_inputs, tmp_path):
    config = load_config(
        InitStageConfig,
        None,
        init_overrides(
            tiny_run_inputs,
            **{
                "loss.name": "psft",
                "loss.psft_minibatches": 2,
                "train.eval_every": 1,
                "train.checkpoint_every": 100,
                "train.epochs": 1,
                "train.export_hf": True,
            },
        ),
    )
    summary = init_trainer.run_init_stage(config, tmp_path, max_steps=5)  # step 5: inside the third global batch
    val = {line["step"]: line["val/val_loss"] for line in _lines(tmp_path) if "val/val_loss" in line}
    assert sorted(val) == [1, 2, 3, 4, 5]
    assert summary["best_step"] == min(val, key=val.get)
    assert summary["best_val_loss"] == pytest.approx(min(val.values()))
    assert (tmp_path / "hf_best" / "config.json").is_file()


@pytest.mark.slow  # a stage run
def test_failed_init_run_closes_everything_and_frees_the_workdir(tiny_run_inputs, tmp_path, monkeypatch):
    config = load_config(
        InitStageConfig, None, init_overrides(tiny_run_inputs, **{"train.eval_every": 2, "train.checkpoint_every": 1})
    )

    def failing_validation(*args, **kwargs):
        raise RuntimeError("validation failed")

    monkeypatch.setattr(init_trainer, "_validation_loss", failing_validation)
    with pytest.raises(RuntimeError, match="validation failed"):
        init_trainer.run_init_stage(config, tmp_path)
    assert [line["step"] for line in _lines(tmp_path) if "train/loss" in line] == [1, 2]  # pending metrics flushed
    WorkdirLock(tmp_path).acquire().release()  # the lock was released
    monkeypatch.undo()
    summary = init_trainer.run_init_stage(config, tmp_path, max_steps=3)  # checkpoints closed cleanly: resumes
    assert summary["steps"] == 3


def test_base_is_held_in_base_param_dtype(tiny_run_inputs, tmp_path):
    overrides = rl_overrides(
        tiny_run_inputs["model"],
        write_rl_jsonl(tmp_path / "rl.jsonl", 8),
        **{"model.base_path": tiny_run_inputs["model"], "model.base_param_dtype": "bfloat16"},
    )
    with StageRun(tmp_path / "run", load_config(RLStageConfig, None, overrides), desc="rl") as run:
        _, policy = run.load_policy()
        _, base = run.load_base()
    assert {x.dtype for x in jax.tree.leaves(base)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(policy)} == {jnp.dtype(jnp.float32)}


def test_rl_workdir_numbered_by_optimizer_update_is_refused_for_resume_but_readable_by_loop_step(
    tiny_run_inputs, tmp_path
):
    from gift_jax.runtime import TrainState
    from gift_jax.runtime.run_checkpoints import _checkpoint_numbers

    prompts = write_rl_jsonl(tmp_path / "rl.jsonl", 8)
    config = load_config(RLStageConfig, None, rl_overrides(tiny_run_inputs["model"], prompts))
    state = TrainState({"w": jnp.ones(3)}, jnp.zeros(()), jnp.int32(4))
    old = Checkpointer(tmp_path / "run" / "checkpoints")
    old.save(4, state, {"step": 2, "prompt_stream": {}})  # RL step 2 after 4 optimizer updates, as written before
    assert _checkpoint_numbers(old, "periodic") == {2: 4}  # --step 2 finds it
    old.close()
    with StageRun(tmp_path / "run", config, desc="rl") as run:
        run.stop_at(10)
        with pytest.raises(RunFailure, match="checkpoint 4 holds loop step 2.*fresh --workdir"):
            run.resume(state)


@pytest.mark.slow  # a stage run
def test_checkpoint_every_minutes_saves_by_wall_time(tiny_run_inputs, tmp_path):
    extra = {"train.checkpoint_every": 100, "train.checkpoint_every_minutes": 1e-6, "train.max_to_keep": 10}
    config = load_config(InitStageConfig, None, init_overrides(tiny_run_inputs, **extra))
    init_trainer.run_init_stage(config, tmp_path)
    checkpointer = Checkpointer(tmp_path / "checkpoints", read_only=True)
    assert checkpointer.steps() == [1, 2, 3, 4, 5, 6]  # every step took longer than the interval
    checkpointer.close()
