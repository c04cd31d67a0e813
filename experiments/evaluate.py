"""Evaluate a Hugging Face folder or any checkpoint of a run on local benchmark files: avg@k and pass@k.

    python experiments/evaluate.py --model runs/gift/hf_best \
        --benchmarks math500=data/math500.jsonl aime24=data/aime24.jsonl gpqa=data/gpqa.parquet \
        --k 4 --temperature 0.6 --max-new-tokens 8192 --out runs/gift/eval
    python experiments/evaluate.py --model runs/gift --step 40 ...      # an orbax step of a stage workdir

Writes `results.md` (markdown table, accuracies in %) and `results.json` to `--out`, plus
`samples_<name>.jsonl` with `--save-samples`. Prompts use the model folder's chat template
(`--chat-template` names a built-in one instead). Benchmark layouts are detected from the records
(see `gift_jax.evaluation.benchmarks`). On several devices the batch is split over a mesh
(`--data/--fsdp/--tensor`, default: pure data parallelism, weights replicated).
Runtime is dominated by decoding (problems x k x max-new-tokens); the end-to-end CPU test on a
tiny checkpoint (`tests/evaluation/test_evaluate.py`) takes about 20 s.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax

from gift_jax.data import load_tokenizer
from gift_jax.evaluation.benchmarks import load_benchmark
from gift_jax.evaluation.evaluate import (
    EvalConfig,
    evaluate_benchmarks,
    parse_named_paths,
    results_markdown,
    write_results,
)
from gift_jax.models import load_hf
from gift_jax.parallel import MeshConfig, make_mesh
from gift_jax.run_checkpoints import (
    CHECKPOINT_KINDS, is_run_workdir, load_run_checkpoint, read_run_config, run_chat_template,
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="Hugging Face model folder, or a stage workdir (then --step / --kind pick the checkpoint)")
    parser.add_argument("--step", type=int, default=None, help="workdir: checkpoint step (default: newest)")
    parser.add_argument("--kind", choices=CHECKPOINT_KINDS, default="periodic", help="workdir: checkpoint kind")
    parser.add_argument("--benchmarks", required=True, nargs="+", metavar="NAME=PATH")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--k", type=int, default=4, help="samples per problem")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=8192)
    parser.add_argument("--problems-per-batch", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat-template", default=None, help="built-in template name instead of the folder's")
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype (float32 for exact checks)")
    parser.add_argument("--data", type=int, default=-1)
    parser.add_argument("--fsdp", type=int, default=1)
    parser.add_argument("--tensor", type=int, default=1)
    parser.add_argument("--save-samples", action="store_true", help="also write samples_<name>.jsonl")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        paths = parse_named_paths(args.benchmarks)
    except ValueError as err:
        parser.error(f"--benchmarks: {err}")
    config = EvalConfig(num_samples=args.k, temperature=args.temperature, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, problems_per_batch=args.problems_per_batch,
                        seed=args.seed)
    benchmarks = {name: load_benchmark(path, name=name, limit=args.limit) for name, path in paths.items()}
    mesh = (make_mesh(MeshConfig(data=args.data, fsdp=args.fsdp, tensor=args.tensor))
            if jax.device_count() > 1 else None)
    checkpoint, chat_template = None, args.chat_template
    if is_run_workdir(args.model):
        try:
            model, _, tokenizer_dir, step = load_run_checkpoint(args.model, step=args.step, kind=args.kind,
                                                                dtype=args.dtype, mesh=mesh)
            # Prompts formatted as in training: the run's built-in template unless one is given here.
            chat_template = chat_template or run_chat_template(read_run_config(args.model))
        except (FileNotFoundError, ValueError) as err:
            parser.error(f"--model {args.model}: {err}")
        checkpoint = {"kind": args.kind, "step": step}
        print(f"{args.model}: {args.kind} checkpoint of step {step}", file=sys.stderr)
    else:
        if args.step is not None or args.kind != "periodic":
            parser.error(f"--step / --kind: {args.model} is a model folder, not a stage workdir with checkpoints")
        model, _ = load_hf(args.model, dtype=args.dtype, mesh=mesh)
        tokenizer_dir = args.model
    tokenizer = load_tokenizer(tokenizer_dir, chat_template=chat_template)
    results = evaluate_benchmarks(model, tokenizer, benchmarks, config, mesh=mesh,
                                  keep_responses=args.save_samples, progress=not args.no_progress)
    run_info = {"model": str(args.model), "checkpoint": checkpoint,
                "benchmarks": {name: str(p) for name, p in paths.items()},
                "eval_config": dataclasses.asdict(config), "dtype": args.dtype, "limit": args.limit,
                "chat_template": chat_template, "devices": jax.device_count()}
    write_results(results, args.out, run_info=run_info, save_samples=args.save_samples)
    print(results_markdown(results))
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
