"""Pretraining the toy world's base model, saved as a Hugging Face folder (with its tokenizer).

Command line: `python experiments/pretrain_toy_base.py --out experiments/toy_base [--steps 1500]` (~9 min
on 2 cores; `--variant tradeoff --out experiments/toy_base_tradeoff` for that world's base). The base is a
small Llama-layout model trained from scratch on the world's `pretrain.jsonl` through the project's own
init-stage trainer with the SFT loss on the assistant turn (label smoothing as the variant's `BaseMix`
says), then exported with `save_hf`; later stages load it back with `load_hf`. The shipped folders
`experiments/toy_base/` (`hard`, `control`) and `experiments/toy_base_tradeoff/` were made this way;
`world.json` beside the weights records the world it was trained on, and the pipeline retrains when
no record matches.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import jax
from flax import nnx

from gift_jax.config_io import from_dict
from gift_jax.models import ModelConfig, Transformer, save_hf
from gift_jax.toy import VOCAB, parse_conversation, write_world
from gift_jax.toy.corpus import VARIANT_MIX
from gift_jax.toy.world import mix_record
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage

BASE_DIMS = dict(hidden_size=128, intermediate_size=384, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=32)
WORLD_SEED = 0  # the base is shared by every experiment seed; seeds vary the later stages
PRETRAIN_STEPS = 1500
# variant -> (the variant whose base it continues from, further steps). The `tradeoff` base is the
# `hard` base trained on for 400 more steps on its own mix (no `direct`, 1e-4 boxed, label
# smoothing): it keeps the stepwise skill, and the new mix sets its branching probabilities.
CONTINUED_FROM: dict[str, tuple[str, int]] = {"tradeoff": ("hard", 400)}


def base_model_config() -> ModelConfig:
    return ModelConfig(
        family="llama",
        vocab_size=len(VOCAB),
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        eos_token_id=VOCAB.index("<eos>"),
        pad_token_id=VOCAB.index("<pad>"),
        **BASE_DIMS,
    )


def world_record(manifest: dict) -> dict:
    """What a base depends on: the pretraining world, the model shape and, for a continued base,
    the record of the base it continued from and the further steps."""
    record = {
        "task": manifest["task"],
        "base_mix": manifest["base_mix"],
        "pretrain": manifest["sizes"]["pretrain"],
        "seed": manifest["seed"],
        "vocab_size": manifest["vocab_size"],
        "dims": BASE_DIMS,
    }
    if manifest.get("variant") in CONTINUED_FROM:
        parent, steps = CONTINUED_FROM[manifest["variant"]]
        parent_manifest = {**manifest, "variant": parent, "base_mix": mix_record(VARIANT_MIX[parent])}
        record["continued_from"] = {"base": world_record(parent_manifest), "steps": steps}
    return record


def pretrain_sft_file(pretrain_jsonl: Path, out: Path) -> Path:
    """Chat-rendered documents -> `{sft_prompt, solution}` rows (the loss covers the assistant turn)."""
    with pretrain_jsonl.open() as src, out.open("w") as dst:
        for line in src:
            prompt, response = parse_conversation(json.loads(line)["text"])
            dst.write(json.dumps({"sft_prompt": prompt, "solution": response}) + "\n")
    return out


def pretrain_base(
    out_dir: Path,
    *,
    work: Path,
    variant: str = "hard",
    steps: int | None = None,
    init_from: Path | None = None,
    batch: int = 128,
    lr: float = 3e-3,
) -> Path:
    """Writes the variant's world, pretrains, exports the final model + tokenizer + world record to `out_dir`.

    A variant in `CONTINUED_FROM` starts from `init_from` (the parent variant's base, whose record
    must match) and trains its further steps; any other starts from random weights and trains
    `steps` (default `PRETRAIN_STEPS`).
    """
    paths = write_world(work / "world", variant=variant, seed=WORLD_SEED)
    manifest = json.loads(paths["manifest"].read_text())
    record = world_record(manifest)
    if "continued_from" in record:
        if (
            init_from is None
            or json.loads((Path(init_from) / "world.json").read_text()) != record["continued_from"]["base"]
        ):
            raise ValueError(
                f"the {variant!r} base continues the {CONTINUED_FROM[variant][0]!r} base: pass init_from= a folder "
                f"whose world.json matches it (got {init_from})"
            )
        init_dir, steps = Path(init_from), record["continued_from"]["steps"]
    else:
        init_dir, steps = work / "random_init", steps or PRETRAIN_STEPS
        config = base_model_config()
        save_hf(Transformer(config, rngs=nnx.Rngs(0)), config, init_dir, tokenizer_dir=paths["tokenizer"])
    num_docs = manifest["sizes"]["pretrain"]
    stage = from_dict(
        InitStageConfig,
        {
            "model": {"path": str(init_dir)},
            "data": {
                "train_file": str(pretrain_sft_file(paths["pretrain"], work / "pretrain_sft.jsonl")),
                "max_length": 64,
                "bucket_lengths": [64],
            },
            "loss": {
                "name": "sft",
                "label_smoothing": manifest["base_mix"]["pretrain_label_smoothing"],
                "chunk_size": 64,
            },
            "optim": {"lr": lr, "schedule": "cosine", "warmup_ratio": 0.03, "min_lr_ratio": 0.05, "weight_decay": 0.01},
            "train": {
                "global_batch": batch,
                "micro_batch_per_device": batch // jax.device_count(),
                "epochs": max(1, -(-steps * batch // num_docs)),
                "max_steps": steps,
                "log_every": 100,
                "checkpoint_every": 500,
                "export_hf": True,
            },
        },
    )
    summary = run_init_stage(stage, work / "train")
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    shutil.rmtree(tmp)
    shutil.copytree(summary["hf_final"], tmp)
    (tmp / "world.json").write_text(json.dumps(record, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
