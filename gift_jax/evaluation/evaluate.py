"""Benchmark evaluation: sample k completions per problem, score them, report avg@k and pass@k.

The paper's protocol (section 6 of the method notes): chat-template prompts, temperature 0.6,
k = 4 samples per problem, mean accuracy over all samples ("avg@k", which the paper calls pass@1),
and the unbiased pass@k for k = 1, 2, 4, 8, ... up to the number of samples.

`evaluate_problems` takes an already-loaded model, so the RL loop can call it for periodic
validation; `experiments/evaluate.py` is the command-line front end that loads a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import string
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from gift_jax.data import ChatTokenizer
from gift_jax.data.unknown_tokens import check_known_tokens
from gift_jax.errors import storage_error
from gift_jax.evaluation.benchmarks import BenchmarkProblem
from gift_jax.evaluation.metrics import avg_at_k, markdown_table, mean_pass_at_k
from gift_jax.models import Transformer
from gift_jax.rewards import RewardScorer, is_correct
from gift_jax.rollout import SampleResult, SamplingConfig, run_engine
from gift_jax.storage import write_text_atomically


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How problems are decoded (defaults: the paper's evaluation protocol).

    num_samples: k, completions per problem.
    temperature, top_p, top_k: decoding (temperature 0 = greedy, then use num_samples=1).
    max_new_tokens: response budget; a response cut there scores on what it has.
    problems_per_batch: problems per sampler call (rows = problems_per_batch * num_samples).
    seed: batch b of a benchmark samples with `fold_in(key(seed), b)`.
    max_concurrent_rows: decode slots of the rollout engine ("auto": sized by the engine; None: the
      static reference, every row at once).
    """

    num_samples: int = 4
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 8192
    problems_per_batch: int = 32
    seed: int = 0
    max_concurrent_rows: int | Literal["auto"] | None = "auto"

    def __post_init__(self):
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in ("num_samples", "max_new_tokens", "problems_per_batch", "max_concurrent_rows")
            if isinstance(getattr(self, name), int) and getattr(self, name) < 1
        ]
        if not (self.max_concurrent_rows in (None, "auto") or isinstance(self.max_concurrent_rows, int)):
            problems.append(f"max_concurrent_rows must be a number, 'auto' or None, got {self.max_concurrent_rows!r}")
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1 or self.top_k < 0 or self.seed < 0:
            problems.append(f"need top_p in (0, 1], top_k >= 0, seed >= 0; got {self.top_p}, {self.top_k}, {self.seed}")
        if problems:
            raise ValueError("; ".join(problems))

    def sampling_config(self, tokenizer: ChatTokenizer) -> SamplingConfig:
        return SamplingConfig(
            max_new_tokens=self.max_new_tokens,
            num_samples=self.num_samples,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            stop_ids=tokenizer.stop_ids,
            pad_id=tokenizer.pad_id,
            max_concurrent_rows=self.max_concurrent_rows,
        )


@dataclasses.dataclass
class BenchmarkResult:
    """Per-sample outcomes of one benchmark; P problems, n samples each.

    correct: `[P, n]` bool. lengths: `[P, n]` generated tokens (stop token included).
    truncated: `[P, n]` bool, cut at max_new_tokens. entropy_sum: summed per-token entropy of the
    sampling distribution over all generated tokens (nats). score_failures: items whose answer
    check timed out or crashed, or whose ground truth could not be read (scored 0). samples: when
    kept, one dict per problem with its prompt, answer, responses and their correctness.
    """

    name: str
    correct: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray
    entropy_sum: float
    score_failures: int
    samples: list[dict] | None = None

    def metrics(self) -> dict[str, float | int]:
        """avg@n, pass@k (k = 1, 2, 4, ... <= n) and response statistics, as a flat dict."""
        num_problems, n = self.correct.shape
        return {
            "num_problems": num_problems,
            "num_samples": n,
            f"avg@{n}": avg_at_k(self.correct),
            **mean_pass_at_k(self.correct, pass_ks(n)),
            "mean_response_tokens": float(self.lengths.mean()),
            "truncated_fraction": float(self.truncated.mean()),
            "mean_token_entropy": self.entropy_sum / max(int(self.lengths.sum()), 1),
            "score_failures": self.score_failures,
        }


def parse_named_paths(items: Sequence[str]) -> dict[str, Path]:
    """Command-line `["name=path", ...]` -> `{name: Path}` (ValueError for a malformed or repeated name)."""
    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected NAME=PATH, got {item!r}")
        if name in named:
            raise ValueError(f"name {name!r} given twice")
        named[name] = Path(path)
    return named


def pass_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n."""
    return [2**i for i in range(n.bit_length()) if 2**i <= n]


def response_texts(result: SampleResult, tokenizer: ChatTokenizer) -> list[str]:
    """Decoded completions without their stop token, one per row."""
    texts = []
    for ids, length, truncated in zip(result.completion_ids, result.lengths, result.truncated, strict=True):
        kept = length if truncated or length == 0 or ids[length - 1] not in tokenizer.stop_ids else length - 1
        texts.append(tokenizer.decode(ids[:kept].tolist(), skip_special_tokens=True))
    return texts


def _answer_kind(problem: BenchmarkProblem) -> tuple[str, str]:
    """(scorer kind, option letters): multiple choice is checked against its own options only."""
    if problem.kind == "multiple_choice":
        options = problem.meta.get("options")
        return problem.kind, string.ascii_uppercase[: len(options)] if options else "ABCDE"
    return problem.kind, ""


def score_responses(
    scorer: RewardScorer, problems: Sequence[BenchmarkProblem], responses: Sequence[str], num_samples: int
) -> tuple[np.ndarray, int]:
    """Scores rows grouped by problem (`num_samples` rows each) -> (`[P, n]` bool, failures)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, problem in enumerate(problems):
        groups[_answer_kind(problem)].append(index)
    correct = np.zeros((len(problems), num_samples), bool)
    failures = 0
    for (kind, choices), indices in groups.items():
        rows = [i * num_samples + j for i in indices for j in range(num_samples)]
        answers = [problems[i].answer for i in indices for _ in range(num_samples)]
        options = {"choices": choices} if choices else {}
        scores = scorer.score([responses[r] for r in rows], answers, kind=kind, **options)
        correct[indices] = is_correct(scores.scores.reshape(len(indices), num_samples))
        failures += scores.timed_out + scores.crashed + scores.bad_ground_truth
    return correct, failures


def encode_problem_prompts(
    tokenizer: ChatTokenizer, problems: Sequence[BenchmarkProblem], name: str
) -> list[list[int]]:
    """Chat-templated prompt ids of every problem; `UnknownTokenError` names the file and row of
    a prompt the tokenizer cannot represent (often an instruction in a language it does not know)."""
    check_known_tokens(
        tokenizer,
        [problem.prompt for problem in problems],
        source=str(problems[0].meta.get("source", name)) if problems else name,
        rows=[problem.meta.get("row", i) for i, problem in enumerate(problems)],
        what=f"prompt of benchmark {name!r}",
        hint="Prompts end in the benchmark's instruction; set it in the benchmark spec "
        "(NAME=PATH:instruction=none or other text).",
    )
    return [tokenizer.encode_prompt(problem.prompt) for problem in problems]


def evaluate_problems(
    model: Transformer,
    tokenizer: ChatTokenizer,
    problems: Sequence[BenchmarkProblem],
    config: EvalConfig,
    scorer: RewardScorer,
    *,
    name: str = "benchmark",
    mesh: Mesh | None = None,
    keep_responses: bool = False,
    progress: bool = True,
) -> BenchmarkResult:
    """Samples `config.num_samples` responses per problem with the sampler and scores them.

    Args:
      model: the policy, already loaded (and sharded over `mesh`, if given).
      tokenizer: formats prompts with its chat template, decodes responses, gives stop / pad ids.
      problems: the benchmark (`gift_jax.evaluation.load_benchmark`).
      scorer: a long-lived `RewardScorer` (its workers are reused across batches and benchmarks).
      keep_responses: keep prompts, answers and decoded responses in `samples` (for sample dumps).
    """
    if not problems:
        raise ValueError(f"benchmark {name!r} has no problems")
    n = config.num_samples
    sampling = config.sampling_config(tokenizer)
    prompt_ids = encode_problem_prompts(tokenizer, problems, name)
    correct, lengths, truncated = [], [], []
    samples: list[dict] = []
    entropy_sum, failures = 0.0, 0
    with tqdm(total=len(problems), desc=name, unit="problem", disable=not progress) as bar:
        for batch, start in enumerate(range(0, len(problems), config.problems_per_batch)):
            chunk = problems[start : start + config.problems_per_batch]
            rng = jax.random.fold_in(jax.random.key(config.seed), batch)
            result, _ = run_engine(model, prompt_ids[start : start + len(chunk)], sampling, rng, mesh=mesh)
            texts = response_texts(result, tokenizer)
            batch_correct, batch_failures = score_responses(scorer, chunk, texts, n)
            correct.append(batch_correct)
            lengths.append(result.lengths.reshape(-1, n))
            truncated.append(result.truncated.reshape(-1, n))
            entropy_sum += float((result.entropies * result.completion_mask).sum())
            failures += batch_failures
            if keep_responses:
                samples += [
                    {
                        "prompt": problem.prompt,
                        "chat_prompt": tokenizer.decode(prompt_ids[start + i]),  # what the model was given
                        "answer": problem.answer,
                        "responses": texts[i * n : (i + 1) * n],
                        "correct": batch_correct[i].tolist(),
                    }
                    for i, problem in enumerate(chunk)
                ]
            bar.update(len(chunk))
            bar.set_postfix(accuracy=f"{np.concatenate(correct).mean():.3f}")
    return BenchmarkResult(
        name=name,
        correct=np.concatenate(correct),
        lengths=np.concatenate(lengths),
        truncated=np.concatenate(truncated),
        entropy_sum=entropy_sum,
        score_failures=failures,
        samples=samples if keep_responses else None,
    )


def evaluate_benchmarks(
    model: Transformer,
    tokenizer: ChatTokenizer,
    benchmarks: Mapping[str, Sequence[BenchmarkProblem]],
    config: EvalConfig,
    *,
    scorer: RewardScorer | None = None,
    mesh: Mesh | None = None,
    keep_responses: bool = False,
    progress: bool = True,
) -> dict[str, BenchmarkResult]:
    """`evaluate_problems` for each named benchmark (one scorer shared; created if not given)."""
    own_scorer = scorer is None
    scorer = RewardScorer() if own_scorer else scorer
    try:
        return {
            name: evaluate_problems(
                model,
                tokenizer,
                problems,
                config,
                scorer,
                name=name,
                mesh=mesh,
                keep_responses=keep_responses,
                progress=progress,
            )
            for name, problems in benchmarks.items()
        }
    finally:
        if own_scorer:
            scorer.close()


def results_markdown(results: Mapping[str, BenchmarkResult]) -> str:
    """One row per benchmark, plus their mean when several: accuracies in %, response statistics."""
    rows = []
    for name, result in results.items():
        metrics = result.metrics()
        row = {"benchmark": name, "problems": str(metrics["num_problems"])}
        row.update({key: 100.0 * value for key, value in metrics.items() if key.startswith(("avg@", "pass@"))})
        row.update(
            {
                "mean tokens": metrics["mean_response_tokens"],
                "truncated %": 100.0 * metrics["truncated_fraction"],
                "entropy": metrics["mean_token_entropy"],
                "check failures": str(metrics["score_failures"]),
            }
        )
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if len(rows) > 1:
        numeric = [c for c in columns if all(isinstance(row.get(c), float) for row in rows)]
        rows.append({"benchmark": "mean", **{c: float(np.mean([row[c] for row in rows])) for c in numeric}})
    return markdown_table(rows, columns)


RESULT_FILES = ("results.md", "results.json")


def write_results(
    results: Mapping[str, BenchmarkResult],
    out_dir: str | Path,
    *,
    run_info: Mapping | None = None,
    save_samples: bool = False,
) -> Path:
    """Writes `results.md`, `results.json` (metrics + `run_info`) and, if asked,
    `samples_<benchmark>.jsonl` (one line per problem, from `BenchmarkResult.samples`).

    A failed write (e.g. a full disk) raises `StorageError` naming the folder."""
    out_dir = Path(out_dir)
    for name, result in results.items() if save_samples else ():
        if result.samples is None:
            raise ValueError(f"benchmark {name!r}: samples were not kept (keep_responses=False)")
    payload = {"run": dict(run_info or {}), "benchmarks": {name: r.metrics() for name, r in results.items()}}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out_dir / "results.md", results_markdown(results) + "\n")
        write_text_atomically(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")
        for name, result in results.items() if save_samples else ():
            lines = (json.dumps(sample_record, ensure_ascii=False) + "\n" for sample_record in result.samples)
            write_text_atomically(out_dir / f"samples_{name}.jsonl", "".join(lines))
    except OSError as err:
        raise storage_error(str(out_dir), err) from err
    return out_dir
