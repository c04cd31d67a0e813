"""Compare checkpoints with their base: pass@k curves, rollout entropy, KL / top-K overlap / hidden
states on a probe set, and last-layer parameter geometry (see `gift_jax.evaluation.diagnostics`).

    python experiments/diagnose.py --base models/Qwen2.5-7B \
        --checkpoints sft=runs/sft/hf_best gift=runs/gift/hf_best gift_rl=runs/gift_rl/hf_final \
        --probe data/probe.jsonl --benchmarks math500=data/math500.jsonl --k 8 --out runs/diagnostics

Checkpoints are visited in the order given, after the base. Parameter geometry is reported for each
consecutive pair (base -> first, first -> second, ...) and for each checkpoint against the base.
The probe file holds `{"text": ...}` or `{"prompt": ..., "response": ...}` records. Writes
`diagnostics.md`, `diagnostics.json`, `passk_<benchmark>.png` and `probe_vs_base.png` to `--out`.
Without `--benchmarks` no rollouts are sampled. The end-to-end CPU test on tiny checkpoints
(`tests/evaluation/test_diagnostics.py`) takes about 20 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax

from gift_jax.data import load_tokenizer
from gift_jax.evaluation.benchmarks import parse_benchmark_specs
from gift_jax.evaluation.diagnostics import (
    PROBE_CHUNK_SIZE,
    diagnostics_markdown,
    last_layer_params,
    parameter_geometry,
    probe_divergence,
    read_probe,
    write_diagnostics,
)
from gift_jax.evaluation.evaluate import (
    EvalConfig,
    evaluate_benchmarks,
    parse_named_paths,
)
from gift_jax.models import load_hf
from gift_jax.models.config import ATTENTION_BACKENDS
from gift_jax.parallel import MeshConfig, make_mesh
from gift_jax.rewards import RewardScorer

BASE = "base"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, type=Path, help="the base model's HF folder")
    parser.add_argument("--checkpoints", required=True, nargs="+", metavar="NAME=DIR")
    parser.add_argument("--probe", required=True, type=Path, help="probe texts (.jsonl / .json / .parquet)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--benchmarks",
        nargs="*",
        default=[],
        metavar="NAME=PATH[:instruction=TEXT]",
        help="as in experiments/evaluate.py (TEXT: checkpoint (default; here the project default instruction), "
        "paper, none, or the instruction)",
    )
    parser.add_argument("--k", type=int, default=8, help="samples per problem for pass@k")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--max-new-tokens", type=int, default=8192)
    parser.add_argument("--problems-per-batch", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=10, help="K of the top-K token overlap")
    parser.add_argument("--probe-max-len", type=int, default=1024)
    parser.add_argument("--probe-batch-size", type=int, default=8)
    parser.add_argument(
        "--probe-chunk-size",
        type=int,
        default=PROBE_CHUNK_SIZE,
        help="probe positions per output-projection chunk (memory: a few [batch, chunk, V] float32 buffers)",
    )
    parser.add_argument("--chat-template", default=None, help="built-in template name instead of the base's")
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype (float32 for exact checks)")
    parser.add_argument(
        "--attention",
        default="blockwise",
        choices=ATTENTION_BACKENDS,
        help="the probe forward's attention (blockwise: O(T x block) memory, no [B, H, T, T] scores)",
    )
    parser.add_argument("--data", type=int, default=-1)
    parser.add_argument("--fsdp", type=int, default=1)
    parser.add_argument("--tensor", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def check_same_tokenizer(base_fingerprint: str, name: str, folder: Path, chat_template: str | None) -> None:
    """Probe tokens and KL are only meaningful when every checkpoint shares the base's tokenizer."""
    if (folder / "tokenizer.json").is_file():
        fingerprint = load_tokenizer(folder, chat_template=chat_template).fingerprint
        if fingerprint != base_fingerprint:
            raise SystemExit(f"--checkpoints {name}={folder}: its tokenizer / chat template differs from the base's")


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        checkpoints = parse_named_paths(args.checkpoints)
    except ValueError as err:
        parser.error(f"--checkpoints: {err}")
    try:
        specs = parse_benchmark_specs(args.benchmarks, limit=args.limit)
    except ValueError as err:
        parser.error(f"--benchmarks: {err}")
    if BASE in checkpoints:
        parser.error(f"--checkpoints: the name {BASE!r} is reserved for --base")
    mesh = make_mesh(MeshConfig(data=args.data, fsdp=args.fsdp, tensor=args.tensor)) if jax.device_count() > 1 else None
    tokenizer = load_tokenizer(args.base, chat_template=args.chat_template)
    for name, folder in checkpoints.items():
        check_same_tokenizer(tokenizer.fingerprint, name, folder, args.chat_template)
    probe = read_probe(args.probe, tokenizer, max_len=args.probe_max_len)
    benchmarks = {spec.name: spec.load() for spec in specs}
    eval_config = EvalConfig(
        num_samples=args.k,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        problems_per_batch=args.problems_per_batch,
        seed=args.seed,
    )

    base, _ = load_hf(args.base, dtype=args.dtype, mesh=mesh, attention=args.attention)
    base_params = last_layer_params(base)
    report = {
        "checkpoints": {BASE: str(args.base), **{n: str(f) for n, f in checkpoints.items()}},
        "top_k": args.top_k,
        "probe": {},
        "rollouts": {},
        "geometry": [],
    }
    previous_name, previous_params = BASE, base_params
    with RewardScorer() as scorer:
        for name, folder in [(BASE, args.base), *checkpoints.items()]:
            print(f"[diagnose] {name}: {folder}", file=sys.stderr)
            model = base if name == BASE else load_hf(folder, dtype=args.dtype, mesh=mesh, attention=args.attention)[0]
            report["probe"][name] = probe_divergence(
                model,
                base,
                probe,
                top_k=args.top_k,
                batch_size=args.probe_batch_size,
                mesh=mesh,
                chunk_size=args.probe_chunk_size,
            )
            if benchmarks:
                results = evaluate_benchmarks(
                    model, tokenizer, benchmarks, eval_config, scorer=scorer, mesh=mesh, progress=not args.no_progress
                )
                report["rollouts"][name] = {b: r.metrics() for b, r in results.items()}
            if name != BASE:
                params = last_layer_params(model)
                report["geometry"].append(
                    {"from": previous_name, "to": name, **parameter_geometry(previous_params, params)}
                )
                if previous_name != BASE:
                    report["geometry"].append({"from": BASE, "to": name, **parameter_geometry(base_params, params)})
                previous_name, previous_params = name, params
            del model
    benchmark_info = {spec.name: {"path": str(spec.path), "instruction": spec.instruction} for spec in specs}
    report["run"] = {
        "probe": str(args.probe),
        "benchmarks": benchmark_info,
        "eval_config": dataclasses.asdict(eval_config),
        "dtype": args.dtype,
        "limit": args.limit,
        "probe_max_len": args.probe_max_len,
        "probe_chunk_size": args.probe_chunk_size,
        "attention": args.attention,
        "devices": jax.device_count(),
    }
    write_diagnostics(report, args.out)
    print(diagnostics_markdown(report))
    print(f"wrote {args.out}/diagnostics.md, diagnostics.json and plots", file=sys.stderr)


if __name__ == "__main__":
    main()
