"""Evaluate a Hugging Face folder or any checkpoint of a run on local benchmark files: avg@k and pass@k.

    python experiments/evaluate.py --model runs/gift/hf_best \
        --benchmarks math500=data/math500.jsonl aime24=data/aime24.jsonl gpqa=data/gpqa.parquet \
        --k 4 --temperature 0.6 --max-new-tokens 8192 --out runs/gift/eval
    python experiments/evaluate.py --model runs/gift --step 40 ...      # an orbax step of a stage workdir
    python experiments/evaluate.py --model runs/default/hard/gift_beta4_seed0/rl \
        --benchmarks toy=runs/default/world_hard/eval.jsonl:instruction=none \
        --k 4 --temperature 0.6 --max-new-tokens 48 --dtype float32 --out runs/eval_toy   # the toy world

A benchmark is NAME=PATH[:instruction=TEXT]: the text appended to every problem of that file.
  (no option) / instruction=checkpoint  math problems end in the instruction the checkpoint was
                                   trained with (its run's `model.prompt`: a workdir's config.json, an
                                   export's prompt_format.json; the project default "Please reason step
                                   by step, and put your final answer within \\boxed{}." for a folder
                                   without either), multiple choice asks for the option letter
  instruction=paper                the paper's protocol sentence (math) / the option-letter sentence
  instruction=none                 the problem text alone (the toy world: its tokenizer knows no
                                   English, and its prompts are written without an instruction)
  instruction=ANY TEXT             appended as given ({first}/{last}: first/last option letter)
The system prompt is the checkpoint's too (`--system-prompt` sets another, `none` none). Any prompt
other than the one the checkpoint was trained with is warned about: its accuracies are then not
the run's `val/avg@k`. `results.json` records the prompt used and the one the checkpoint trained with.
A prompt the tokenizer can only encode with its unknown token is an error naming the file and row.

Writes `results.md` (markdown table, accuracies in %) and `results.json` to `--out`, plus
`samples_<name>.jsonl` with `--save-samples`. An `--out` that already holds results, a model or a run
workdir is refused unless `--overwrite` (which replaces only the result files). Exit statuses:
`gift_jax.errors`. Prompts use the model folder's chat template
(`--chat-template` names a built-in one instead). Benchmark layouts are detected from the records
(see `gift_jax.evaluation.benchmarks`). On several devices the batch is split over a mesh
(`--data/--fsdp/--tensor`, default: pure data parallelism, weights replicated). The toy pipeline
evaluates through the same function (`gift_jax.evaluation.checkpoint_eval.evaluate_checkpoint`), so
the same checkpoint, file, instruction, --k, --temperature, --max-new-tokens, --seed and --dtype give
its numbers. Runtime is dominated by decoding (problems x k x max-new-tokens); the end-to-end CPU
test on a tiny checkpoint (`tests/evaluation/test_evaluate.py`) takes about 20 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax

from gift_jax.cli import at_least, report_errors
from gift_jax.evaluation.benchmarks import CHECKPOINT_INSTRUCTIONS, NO_INSTRUCTION, parse_benchmark_specs
from gift_jax.evaluation.checkpoint_eval import evaluate_checkpoint
from gift_jax.evaluation.evaluate import RESULT_FILES, EvalConfig, results_markdown, write_results
from gift_jax.parallel import MeshConfig, make_mesh
from gift_jax.runtime.run_checkpoints import CHECKPOINT_KINDS
from gift_jax.storage import run_workdir_marker


def top_p(text: str) -> float:
    value = at_least(0.0, float)(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def earlier_contents(out: Path) -> list[str]:
    """What `--out` already holds that results could be confused with or written over."""
    if not out.is_dir():
        return []
    found = []
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        found.append("a model (config.json + *.safetensors)")
    marker = run_workdir_marker(out)
    if marker is not None:
        found.append(f"a run workdir ({marker})")
    results = sorted(p.name for p in out.iterdir() if p.name in RESULT_FILES or p.name.startswith("samples_"))
    if results:
        found.append(f"earlier results ({', '.join(results)})")
    return found


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="Hugging Face model folder, or a stage workdir (then --step / --kind pick the checkpoint)",
    )
    parser.add_argument(
        "--step",
        type=at_least(0),
        default=None,
        help="workdir: loop step of the checkpoint (RL step / init update; default: newest)",
    )
    parser.add_argument("--kind", choices=CHECKPOINT_KINDS, default="periodic", help="workdir: checkpoint kind")
    parser.add_argument(
        "--benchmarks",
        required=True,
        nargs="+",
        metavar="NAME=PATH[:instruction=TEXT]",
        help="benchmark files; TEXT: checkpoint (default), paper, none, or the instruction itself (see above)",
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--overwrite", action="store_true", help="write over the results already in --out")
    parser.add_argument("--k", type=at_least(1), default=4, help="samples per problem")
    parser.add_argument("--temperature", type=at_least(0.0, float), default=0.6, help="0: greedy")
    parser.add_argument("--top-p", type=top_p, default=1.0, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--max-new-tokens", type=at_least(1), default=8192)
    parser.add_argument("--problems-per-batch", type=at_least(1), default=32)
    parser.add_argument("--limit", type=at_least(1), default=None, help="first N problems of each benchmark")
    parser.add_argument("--seed", type=at_least(0), default=0)
    parser.add_argument("--chat-template", default=None, help="built-in template name instead of the folder's")
    parser.add_argument(
        "--system-prompt",
        default=CHECKPOINT_INSTRUCTIONS,
        metavar="TEXT",
        help="system turn before every prompt: checkpoint (default: the one it was trained with), none, or the text",
    )
    parser.add_argument(
        "--dtype", default="bfloat16", help="compute dtype (float32 for exact checks and to match the toy pipeline)"
    )
    parser.add_argument("--data", type=int, default=-1)
    parser.add_argument("--fsdp", type=int, default=1)
    parser.add_argument("--tensor", type=int, default=1)
    parser.add_argument("--save-samples", action="store_true", help="also write samples_<name>.jsonl")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        specs = parse_benchmark_specs(args.benchmarks, limit=args.limit)
    except ValueError as err:
        parser.error(f"--benchmarks: {err}")
    found = earlier_contents(args.out)
    if found and not args.overwrite:
        parser.error(f"--out {args.out} already holds {'; '.join(found)}; choose another folder or pass --overwrite")
    config = EvalConfig(
        num_samples=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        problems_per_batch=args.problems_per_batch,
        seed=args.seed,
    )
    mesh = make_mesh(MeshConfig(data=args.data, fsdp=args.fsdp, tensor=args.tensor)) if jax.device_count() > 1 else None

    def evaluate() -> int:
        evaluation = evaluate_checkpoint(
            args.model,
            specs,
            config,
            step=args.step,
            kind=args.kind,
            dtype=args.dtype,
            chat_template=args.chat_template,
            mesh=mesh,
            keep_responses=args.save_samples,
            progress=not args.no_progress,
            system_prompt=None if args.system_prompt == NO_INSTRUCTION else args.system_prompt,
        )
        for warning in evaluation.prompt["warnings"]:
            print(f"WARNING: {warning}: accuracies measured with another prompt than training's", file=sys.stderr)
        if evaluation.checkpoint is not None:
            print(f"{args.model}: {args.kind} checkpoint of step {evaluation.checkpoint['step']}", file=sys.stderr)
        run_info = {
            "model": str(args.model),
            "checkpoint": evaluation.checkpoint,
            "benchmarks": {spec.name: {"path": str(spec.path), "instruction": spec.instruction} for spec in specs},
            "eval_config": dataclasses.asdict(config),
            "dtype": args.dtype,
            "limit": args.limit,
            "chat_template": evaluation.chat_template,
            "prompt": evaluation.prompt,
            "devices": jax.device_count(),
        }
        write_results(evaluation.results, args.out, run_info=run_info, save_samples=args.save_samples)
        print(results_markdown(evaluation.results))
        print(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}", file=sys.stderr)
        return 0

    return report_errors(evaluate)


if __name__ == "__main__":
    sys.exit(main())
