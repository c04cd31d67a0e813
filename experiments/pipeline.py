"""The embedded end-to-end pipeline: toy base -> init stage (SFT, GIFT, ...) -> identical GRPO -> evaluation.

    python experiments/pipeline.py --preset default --workdir runs/default    # ~9 min on 2 CPU cores
    python experiments/pipeline.py --preset smoke --workdir runs/smoke        # < 1 min (CI runs it)
    python experiments/pipeline.py --preset sweep --workdir runs/sweep        # ~18 min: the beta sweep, 1 seed
    python experiments/pipeline.py --preset baselines --workdir runs/baselines  # ~40 min: every init, 3 seeds
    python experiments/pipeline.py --preset full --workdir runs/full          # hours: 3 seeds, sweep, baselines
    python experiments/pipeline.py --preset paper --workdir runs/paper        # the `tradeoff` world: every
        # init of the paper (incl. LUFFY / ReLIFT) and a beta grid, 3 seeds (time in the README)

Steps, for every (world variant, seed, init method):
  1. the toy world's files (gift_jax.toy.write_world) and its base model: the shipped HF folder
     experiments/toy_base (re-pretrained into WORKDIR/base if it does not match the world);
  2. the init stage from the base (run_init_stage, loss by name; "base", "luffy" and "relift" skip it);
  3. evaluation before RL: pass@k at temperature 1.0 (the RL sampling temperature; exploration
     potential), avg@4 at 0.6 (the paper's protocol), style and answer-format shares of the samples;
  4. the same GRPO stage from that init (run_rl_stage; "luffy" / "relift": that RL algorithm from the
     base, with the expert solutions of the RL prompts), then the same evaluation after RL.
Outputs: WORKDIR/results.json (`{"rows": [...]}`), WORKDIR/results.md (mean +- std over seeds) and PNG
plots. Finished runs are skipped when the command is repeated with the same workdir (resume).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import jax

from gift_jax.config_io import from_dict
from gift_jax.data import load_tokenizer
from gift_jax.evaluation.benchmarks import BenchmarkSpec
from gift_jax.evaluation.checkpoint_eval import evaluate_checkpoint
from gift_jax.evaluation.evaluate import EvalConfig
from gift_jax.evaluation.metrics import mean_pass_at_k
from gift_jax.models import load_hf
from gift_jax.rewards import RewardScorer
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.trainer import run_rl_stage
from gift_jax.rollout import SamplingConfig, sample
from gift_jax.toy import classify_style, write_world
from gift_jax.toy.base_pretraining import CONTINUED_FROM, WORLD_SEED, pretrain_base, world_record
from gift_jax.toy.presets import PRESETS, Preset
from gift_jax.toy.report import write_report
from gift_jax.toy.styles import BOXED_PREFIX, STYLE_HEADERS
from gift_jax.train.init_config import InitStageConfig, LossSection
from gift_jax.train.init_trainer import run_init_stage

SHIPPED_BASE = Path(__file__).resolve().parent / "toy_base"  # the `hard` / `control` worlds' base
SHIPPED_BASES = (SHIPPED_BASE, SHIPPED_BASE.with_name("toy_base_tradeoff"))
RL_ALGORITHM_INITS = ("luffy", "relift")  # no init stage: that RL algorithm runs from the base


def ensure_base(workdir: Path, world_manifest: dict) -> Path:
    """A shipped base trained on this world, else one pretrained into WORKDIR/base_<variant>."""
    wanted = world_record(world_manifest)
    variant = world_manifest["variant"]
    for candidate in (*SHIPPED_BASES, *sorted(workdir.glob("base_*"))):
        record = candidate / "world.json"
        if record.exists() and json.loads(record.read_text()) == wanted:
            return candidate
    out = workdir / f"base_{variant}"
    print(f"no base pretrained on this world among {[str(b) for b in SHIPPED_BASES]}; pretraining one into {out}")
    parent = None
    if variant in CONTINUED_FROM:  # the parent variant's base first (shipped or pretrained here)
        parent_world = write_world(
            workdir / f"world_{CONTINUED_FROM[variant][0]}", variant=CONTINUED_FROM[variant][0], seed=WORLD_SEED
        )
        parent = ensure_base(workdir, json.loads(parent_world["manifest"].read_text()))
    return pretrain_base(out, work=workdir / f"base_{variant}_work", variant=variant, init_from=parent)


def subset_jsonl(src: Path, dst: Path, rows: int) -> Path:
    """The first `rows` lines of `src` (the world is written at full size; presets use prefixes)."""
    with src.open() as f, dst.open("w") as out:
        for i, line in enumerate(f):
            if i >= rows:
                break
            out.write(line)
    return dst


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
            "model": {"path": str(base)},
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
    """The RL-stage config of one run: identical for every init; `method` is grpo, luffy or relift."""
    group = preset.rl_group_size
    return from_dict(
        RLStageConfig,
        {
            "model": {"path": str(model), "base_path": str(base)},
            "data": {
                "train_file": str(files["rl_prompts"]),
                "val_file": str(files["eval"]) if preset.rl_eval_every else None,
                "val_limit": preset.eval_problems,
            },
            "rollout": {"group_size": group, "temperature": 1.0, "max_new_tokens": preset.rl_max_new_tokens},
            "algo": {"method": method, "mini_batch_prompts": preset.rl_prompts_per_step // 2, "chunk_size": 64},
            "reward": {"num_workers": 1},
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


def evaluate(model_dir: Path, spec: BenchmarkSpec, preset: Preset, seed: int, scorer: RewardScorer) -> dict:
    """pass@k (T=1.0, n=pass_k_samples), avg@k (T=0.6), style / answer-format shares of the T=1.0 samples.

    Both through `evaluate_checkpoint`, as `experiments/evaluate.py` (`--dtype float32 --seed SEED`)."""
    budget = preset.rl_max_new_tokens
    explore = evaluate_checkpoint(
        model_dir,
        [spec],
        EvalConfig(num_samples=preset.pass_k_samples, temperature=1.0, max_new_tokens=budget, seed=seed),
        scorer=scorer,
        keep_responses=True,
        progress=False,
    ).results[spec.name]
    protocol = evaluate_checkpoint(
        model_dir,
        [spec],
        EvalConfig(num_samples=preset.avg_k, temperature=0.6, max_new_tokens=budget, seed=seed),
        scorer=scorer,
        progress=False,
    ).results[spec.name]
    responses = [r for sample in explore.samples for r in sample["responses"]]
    styles = Counter(classify_style(r) for r in responses)
    metrics = mean_pass_at_k(explore.correct, range(1, preset.pass_k_samples + 1))  # the whole curve, k = 1..n
    metrics.update(
        {
            f"avg@{preset.avg_k}": protocol.metrics()[f"avg@{preset.avg_k}"],
            "boxed_rate": sum(BOXED_PREFIX in r for r in responses) / len(responses),
            "mean_token_entropy": explore.metrics()["mean_token_entropy"],
            **{f"style_{s}": n / len(responses) for s, n in sorted(styles.items())},
        }
    )
    return metrics


def style_skill(model_dir: Path, problems, budget: int) -> dict[str, float]:
    """Greedy accuracy of a model with each style's header forced after the generation prompt.

    The answer counts in either format (plain `answer: N` or boxed): this measures how well the model
    can *compute* in each style, the premise the hard world rests on (stepwise >> direct).
    """
    model, _ = load_hf(model_dir)
    tokenizer = load_tokenizer(model_dir)
    config = SamplingConfig(
        max_new_tokens=budget, temperature=0.0, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id
    )
    skill = {}
    for style, header in STYLE_HEADERS.items():
        prompts = [tokenizer.encode_prompt(p.prompt) + tokenizer.encode(header) for p in problems]
        result = sample(model, prompts, config, jax.random.key(0))
        texts = [
            tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(result.completion_ids, result.lengths)
        ]
        final = [re.findall(r"\d+", text)[-1:] for text in texts]
        skill[f"greedy_acc_{style}"] = sum(f == [p.answer] for f, p in zip(final, problems)) / len(problems)
    return skill


def _write_results(workdir: Path, rows: list[dict], floors: dict) -> None:
    tmp = workdir / "results.json.tmp"
    tmp.write_text(json.dumps({"rows": rows, "base": floors}, indent=1))
    tmp.replace(workdir / "results.json")


def run_one(preset: Preset, workdir: Path, variant: str, files: dict, base: Path, init: str, beta, seed: int) -> dict:
    """One (variant, init, seed) run: init stage, evaluation, RL, evaluation. Returns its results row."""
    spec = eval_spec(preset, files)
    run_dir = workdir / variant / f"{init_label(init, beta)}_seed{seed}"
    scorer = RewardScorer(num_workers=1)
    try:
        init_model = run_init(preset, files, base, init, beta, seed, run_dir / "init")
        pre_rl = evaluate(init_model, spec, preset, seed, scorer)
        method = init if init in RL_ALGORITHM_INITS else "grpo"
        rl_model, rl_metrics = run_rl(preset, files, init_model, base, seed, run_dir / "rl", method)
        post_rl = evaluate(rl_model, spec, preset, seed, scorer)
    finally:
        scorer.close()
    shutil.rmtree(run_dir / "init" / "data", ignore_errors=True)  # tokenized copies: rebuildable
    return {
        "variant": variant,
        "init": init,
        "beta": beta,
        "seed": seed,
        "pre_rl": pre_rl,
        "post_rl": post_rl,
        "rl_metrics": str(rl_metrics.relative_to(workdir)),
    }


def eval_spec(preset: Preset, files: dict) -> BenchmarkSpec:
    # The toy prompts carry no instruction: the toy tokenizer knows no English.
    return BenchmarkSpec("toy_eval", files["eval"], instruction=None, limit=preset.eval_problems)


def prepare_variant(preset: Preset, workdir: Path, variant: str) -> tuple[dict, Path]:
    """The variant's world files (prefixes of the preset's sizes) and its base model."""
    world_dir = workdir / f"world_{variant}"
    paths = write_world(world_dir, variant=variant, seed=WORLD_SEED)
    base = ensure_base(workdir, json.loads(paths["manifest"].read_text()))
    sizes = preset.world_sizes
    files = {
        name: subset_jsonl(paths[name], world_dir / f"{name}_{sizes[name]}.jsonl", sizes[name])
        for name in ("expert", "expert_val", "rl_prompts", "eval")
    }
    return files, base


def _row_order(preset: Preset):
    order = {
        (v, i, b, s): n
        for n, (v, s, (i, b)) in enumerate(
            (v, s, ib) for v in preset.variants for s in preset.seeds for ib in preset.inits
        )
    }
    return lambda row: order.get((row["variant"], row["init"], row["beta"], row["seed"]), len(order))


def run_pipeline(preset_name: str, workdir: str | Path, jobs: int = 1) -> dict:
    """Every run of the preset (skipping those already in WORKDIR/results.json), then the report.

    `jobs` > 1 runs that many (variant, init, seed) runs at once in separate processes: XLA on CPU
    keeps about one core busy with these tiny models, so two jobs on two cores finish sooner. Every
    run is seeded on its own, so its numbers do not depend on `jobs`.
    """
    preset = PRESETS[preset_name]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results_path = workdir / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    rows, floors = previous.get("rows", []), previous.get("base", {})
    done = {(r["variant"], r["init"], r["beta"], r["seed"]) for r in rows}
    started = time.time()
    pending = []
    for variant in preset.variants:
        files, base = prepare_variant(preset, workdir, variant)
        if variant not in floors:  # the base's own floors: reward-based pass@k and per-style skill
            scorer = RewardScorer(num_workers=1)
            try:
                spec = eval_spec(preset, files)
                floors[variant] = {
                    **evaluate(base, spec, preset, 0, scorer),
                    **style_skill(base, spec.load(), preset.rl_max_new_tokens),
                }
            finally:
                scorer.close()
            _write_results(workdir, rows, floors)
        pending += [
            (variant, files, base, init, beta, seed)
            for seed in preset.seeds
            for init, beta in preset.inits
            if (variant, init, beta, seed) not in done
        ]

    def finished(row: dict) -> None:
        rows.append(row)
        rows.sort(key=_row_order(preset))
        _write_results(workdir, rows, floors)
        label = init_label(row["init"], row["beta"])
        print(
            f"== done {row['variant']} / {label} / seed {row['seed']} ({time.time() - started:.0f}s elapsed)",
            flush=True,
        )

    if jobs <= 1:
        for variant, files, base, init, beta, seed in pending:
            finished(run_one(preset, workdir, variant, files, base, init, beta, seed))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(run_one, preset, workdir, variant, files, base, init, beta, seed)
                for variant, files, base, init, beta, seed in pending
            ]
            for future in as_completed(futures):
                finished(future.result())
    _write_results(workdir, rows, floors)
    write_report(workdir, rows, floors, preset_name, registered_beta=preset.registered_beta)
    print(f"pipeline '{preset_name}' finished in {time.time() - started:.0f}s: {workdir / 'results.md'}")
    return {"rows": rows, "base": floors}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: the preset's)")
    args = parser.parse_args(argv)
    run_pipeline(args.preset, args.workdir, jobs=args.jobs or PRESETS[args.preset].jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
