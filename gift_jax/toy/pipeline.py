"""The embedded end-to-end pipeline: toy base -> init stage (SFT, GIFT, ...) -> identical GRPO -> evaluation.

The library behind `experiments/pipeline.py` (which passes the shipped bases):

    python experiments/pipeline.py --preset default --workdir runs/default    # ~9 min on 2 CPU cores
    python experiments/pipeline.py --preset smoke --workdir runs/smoke        # < 1 min (CI runs it)
    python experiments/pipeline.py --preset sweep --workdir runs/sweep        # ~18 min: the beta sweep, 1 seed
    python experiments/pipeline.py --preset baselines --workdir runs/baselines  # ~40 min: every init, 3 seeds
    python experiments/pipeline.py --preset full --workdir runs/full          # hours: 3 seeds, sweep, baselines
    python experiments/pipeline.py --preset paper --workdir runs/paper        # the `tradeoff` world: every
        # init of the paper (incl. LUFFY / ReLIFT) and a beta grid, 3 seeds (time in the README)
    python experiments/pipeline.py --preset dapo --workdir runs/dapo          # the same world, DAPO instead
        # of GRPO: base, SFT, ASFT, GIFT at two betas, 3-5 seeds (time in the README)

Steps, for every (world variant, seed, init method):
  1. the toy world's files (gift_jax.toy.write_world) and its base model: a shipped HF folder
     (experiments/toy_base, experiments/toy_base_tradeoff), re-pretrained into WORKDIR/base_<variant>
     if none matches the world;
  2. the init stage from the base (run_init_stage, loss by name; "base", "luffy" and "relift" skip it);
  3. evaluation before RL: pass@k at temperature 1.0 (the RL sampling temperature; exploration
     potential), avg@4 at 0.6 (the paper's protocol), style and answer-format shares of the samples;
  4. the same RL stage from that init (run_rl_stage: GRPO, or the preset's `rl_recipe` such as DAPO;
     "luffy" / "relift": that RL algorithm from the base, with the expert solutions of the RL prompts),
     then the same evaluation after RL.
Outputs: WORKDIR/results.json (`{"rows": [...]}`), WORKDIR/results.md (mean +- std over seeds) and PNG
plots. Finished runs are skipped when the command is repeated with the same workdir (resume).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from gift_jax.rewards import RewardScorer
from gift_jax.toy.base_pretraining import CONTINUED_FROM, WORLD_SEED, pretrain_base, world_record
from gift_jax.toy.presets import PRESETS, Preset
from gift_jax.toy.report import write_report
from gift_jax.toy.stage_runs import RL_ALGORITHM_INITS, init_label, run_init, run_rl
from gift_jax.toy.toy_eval import eval_spec, evaluate, style_skill
from gift_jax.toy.world import write_world


def ensure_base(workdir: Path, world_manifest: dict, shipped_bases: Sequence[Path] = ()) -> Path:
    """The first of `shipped_bases` (HF folders with a `world.json` record) trained on this world,
    else one pretrained earlier or now into WORKDIR/base_<variant>."""
    wanted = world_record(world_manifest)
    variant = world_manifest["variant"]
    for candidate in (*shipped_bases, *sorted(workdir.glob("base_*"))):
        record = candidate / "world.json"
        if record.exists() and json.loads(record.read_text()) == wanted:
            return candidate
    out = workdir / f"base_{variant}"
    print(f"no base pretrained on this world among {[str(b) for b in shipped_bases]}; pretraining one into {out}")
    parent = None
    if variant in CONTINUED_FROM:  # the parent variant's base first (shipped or pretrained here)
        parent_world = write_world(
            workdir / f"world_{CONTINUED_FROM[variant][0]}", variant=CONTINUED_FROM[variant][0], seed=WORLD_SEED
        )
        parent = ensure_base(workdir, json.loads(parent_world["manifest"].read_text()), shipped_bases)
    return pretrain_base(out, work=workdir / f"base_{variant}_work", variant=variant, init_from=parent)


def subset_jsonl(src: Path, dst: Path, rows: int) -> Path:
    """The first `rows` lines of `src` (the world is written at full size; presets use prefixes)."""
    with src.open() as f, dst.open("w") as out:
        for i, line in enumerate(f):
            if i >= rows:
                break
            out.write(line)
    return dst


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


def prepare_variant(
    preset: Preset, workdir: Path, variant: str, shipped_bases: Sequence[Path] = ()
) -> tuple[dict, Path]:
    """The variant's world files (prefixes of the preset's sizes) and its base model."""
    world_dir = workdir / f"world_{variant}"
    paths = write_world(world_dir, variant=variant, seed=WORLD_SEED)
    base = ensure_base(workdir, json.loads(paths["manifest"].read_text()), shipped_bases)
    sizes = preset.world_sizes
    files = {
        name: subset_jsonl(paths[name], world_dir / f"{name}_{sizes[name]}.jsonl", sizes[name])
        for name in ("expert", "expert_val", "rl_prompts", "eval")
    }
    return files, base


def _row_order(preset: Preset):
    """Sort key: the preset's (variant, seed, init) order, whatever order parallel runs finish in."""
    order = {run: n for n, run in enumerate(preset.runs())}
    return lambda row: order.get((row["variant"], row["init"], row["beta"], row["seed"]), len(order))


def run_pipeline(
    preset_name: str, workdir: str | Path, jobs: int | None = None, shipped_bases: Sequence[Path] = ()
) -> dict:
    """Every run of the preset (skipping those already in WORKDIR/results.json), then the report.

    `jobs` > 1 runs that many (variant, init, seed) runs at once in separate processes: XLA on CPU
    keeps about one core busy with these tiny models, so two jobs on two cores finish sooner. Every
    run is seeded on its own, so its numbers do not depend on `jobs` (None: the preset's).
    `shipped_bases`: pretrained bases to use when their world record matches (else pretraining).
    """
    preset = PRESETS[preset_name]
    jobs = jobs or preset.jobs
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results_path = workdir / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    rows, floors = previous.get("rows", []), previous.get("base", {})
    done = {(r["variant"], r["init"], r["beta"], r["seed"]) for r in rows}
    started = time.time()
    pending = []
    for variant in preset.variants:
        files, base = prepare_variant(preset, workdir, variant, shipped_bases)
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
            for run_variant, init, beta, seed in preset.runs()
            if run_variant == variant and (variant, init, beta, seed) not in done
        ]

    row_order = _row_order(preset)

    def finished(row: dict) -> None:
        rows.append(row)
        rows.sort(key=row_order)
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
