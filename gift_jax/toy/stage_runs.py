"""One toy run's two stages as the pipeline configures them: the init stage by loss name, then the
RL stage (GRPO after an init; LUFFY / ReLIFT straight from the base). Every init gets the identical RL."""

from __future__ import annotations

from pathlib import Path

import jax

from gift_jax.config_io import from_dict
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.trainer import run_rl_stage
from gift_jax.toy.presets import Preset
from gift_jax.train.init_config import InitStageConfig, LossSection
from gift_jax.train.init_trainer import run_init_stage

RL_ALGORITHM_INITS = ("luffy", "relift")  # no init stage: that RL algorithm runs from the base
# The toy world's prompts are the problems alone (its tokenizer knows no English), in every stage.
TOY_PROMPT = {"instruction": None, "system_prompt": None}


def init_label(init: str, beta: float | None) -> str:
    return f"{init}_beta{beta:g}" if beta is not None else init


def init_stage_config(
    preset: Preset, files: dict, base: Path, init: str, beta: float | None, seed: int, num_devices: int
) -> InitStageConfig:
    """The init-stage config of one (init method, seed) run of `preset` on `num_devices` devices."""
    loss = {"name": init, **({"beta": beta} if beta is not None else {}), **preset.baseline_hparams, "chunk_size": 64}
    # PSFT splits each global batch into psft_minibatches updates; each must still hold whole micro-batches.
    updates_per_batch = from_dict(LossSection, loss).updates_per_batch
    return from_dict(
        InitStageConfig,
        {
            "model": {"path": str(base), "prompt": TOY_PROMPT},
            "data": {
                "train_file": str(files["expert"]),
                "val_file": str(files["expert_val"]),
                "max_length": 64,
                "bucket_lengths": [64],
                "num_threads": 0,
            },
            "loss": loss,
            "optim": {"lr": preset.init_lr, "schedule": "constant"},
            "train": {
                "global_batch": preset.init_batch,
                "micro_batch_per_device": max(preset.init_batch // num_devices // updates_per_batch, 1),
                "epochs": preset.init_epochs,
                "seed": seed,
                "log_every": 50,
            },
        },
    )


def run_init(preset: Preset, files: dict, base: Path, init: str, beta: float | None, seed: int, out: Path) -> Path:
    if init == "base" or init in RL_ALGORITHM_INITS:
        return base
    summary = run_init_stage(init_stage_config(preset, files, base, init, beta, seed, jax.device_count()), out)
    return Path(summary.get("hf_best", summary["hf_final"]))


def rl_stage_config(preset: Preset, files: dict, model: Path, base: Path, seed: int, method: str) -> RLStageConfig:
    """The RL-stage config of one run: identical for every init; `method` is grpo, luffy or relift, and the
    preset's `rl_recipe` (e.g. DAPO's) sets the algorithm's and the reward's options."""
    group = preset.rl_group_size
    return from_dict(
        RLStageConfig,
        {
            "model": {"path": str(model), "base_path": str(base), "prompt": TOY_PROMPT},
            "data": {
                "train_file": str(files["rl_prompts"]),
                "val_file": str(files["eval"]) if preset.rl_eval_every else None,
                "val_limit": preset.eval_problems,
            },
            "rollout": {"group_size": group, "temperature": 1.0, "max_new_tokens": preset.rl_max_new_tokens},
            "algo": {
                "method": method,
                "mini_batch_prompts": preset.rl_prompts_per_step // 2,
                "chunk_size": 64,
                **preset.rl_recipe.get("algo", {}),
            },
            "reward": {"num_workers": 1, **preset.rl_recipe.get("reward", {})},
            "optim": {"lr": preset.rl_lr, "b2": 0.95},  # the toy's RL uses the init stage's AdamW betas
            "train": {
                "prompts_per_step": preset.rl_prompts_per_step,
                "max_steps": preset.rl_steps,
                "seed": seed,
                "micro_batch_per_device": max(preset.rl_prompts_per_step // 2 * group // jax.device_count(), 1),
                "eval_every": preset.rl_eval_every or None,
                "eval_k": preset.avg_k,
                "checkpoint_every": max(preset.rl_steps // 2, 1),
                "log_every": 5,
            },
        },
    )


def run_rl(
    preset: Preset, files: dict, model: Path, base: Path, seed: int, out: Path, method: str = "grpo"
) -> tuple[Path, Path]:
    summary = run_rl_stage(rl_stage_config(preset, files, model, base, seed, method), out)
    return Path(summary["hf_final"]), out / "metrics.jsonl"
