"""`write_world`: the toy reasoning world as files (corpora, splits, tokenizer, manifest).

    from gift_jax.toy import write_world
    paths = write_world("runs/toy_world", variant="hard", seed=0)

Files written under `out_dir`:
  pretrain.jsonl     {"text"}: chat-rendered base documents, styles mixed, ~2% boxed
  expert.jsonl       {"sft_prompt", "solution"}: init-stage demonstrations (one style, boxed)
  expert.parquet     the same rows in the official parquet format
  expert_val.jsonl   {"sft_prompt", "solution"}: held-out demonstrations (validation NLL)
  rl_prompts.jsonl   {"prompt", "answer", "solution"}: RL-stage prompts (+ the expert's solution, for LUFFY / ReLIFT)
  eval.jsonl         {"problem", "answer"}: held-out test problems
  tokenizer/         tokenizer.json, tokenizer_config.json (chat template), special_tokens_map.json
  world.json         the configuration and measured statistics (style shares, lengths, vocab)
Prompts are raw user turns; consumers apply the tokenizer's chat template.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gift_jax.toy import corpus, styles
from gift_jax.toy.task import Problem, TaskSpec
from gift_jax.toy.tokenizer import VOCAB, build_tokenizer, parse_conversation, render_conversation, save_tokenizer


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _token_counts(texts: list[str]) -> list[int]:
    return [len(e.ids) for e in build_tokenizer().encode_batch(texts, add_special_tokens=False)]


def worst_case_lengths(task: TaskSpec) -> dict[str, int]:
    """Longest prompt (with generation prompt), response (with EOS) and whole sequence, in tokens.

    Every rendering is longest for the problem with the most operands, all at their maximum, since
    then every number written (operands, partial sums, the answer) has the most digits.
    """
    problem = Problem((task.max_operand,) * task.max_operands)
    prompt_tokens = _token_counts([render_conversation(problem.prompt)])[0]
    full = [
        render_conversation(problem.prompt, styles.render_solution(problem, style, boxed=boxed))
        for style in styles.STYLES
        for boxed in (False, True)
    ]
    sequence_tokens = max(_token_counts(full))
    return {
        "prompt_tokens": prompt_tokens,
        "response_tokens": sequence_tokens - prompt_tokens,
        "sequence_tokens": sequence_tokens,
    }


def base_corpus_stats(pretrain: list[dict[str, str]]) -> dict:
    """Style shares, boxed fraction and longest document (tokens) of a pretraining corpus."""
    responses = [parse_conversation(row["text"])[1] for row in pretrain]
    style_counts = Counter(styles.classify_style(r) for r in responses)
    return {
        "documents": len(pretrain),
        "style_shares": {s: style_counts[s] / len(pretrain) for s in (*styles.STYLES, styles.NO_STYLE)},
        "boxed_fraction": sum(styles.BOXED_PREFIX in r for r in responses) / len(pretrain),
        "max_tokens": max(_token_counts([row["text"] for row in pretrain])),
    }


def mix_record(mix: corpus.BaseMix) -> dict:
    """A base mix as the manifest records it (JSON-ready)."""
    return {
        "style_probabilities": dict(zip(styles.STYLES, mix.style_probabilities.tolist())),
        "boxed_fraction": mix.boxed_fraction,
        "pretrain_label_smoothing": mix.pretrain_label_smoothing,
    }


def write_world(
    out_dir: str | Path,
    *,
    variant: str = "hard",
    seed: int = 0,
    sizes: corpus.SplitSizes | dict[str, int] | None = None,
    task: TaskSpec | None = None,
    mix: corpus.BaseMix | None = None,
) -> dict[str, Path]:
    """Writes the whole world for one (variant, seed); the same arguments give the same bytes.

    Args:
      out_dir: folder to write into (created; existing world files are overwritten).
      variant: `hard` (the expert skips intermediate steps), `control` (the expert writes the
        easiest, running-sum style) or `tradeoff` (as `hard`, over a base that never skips the
        steps and almost never boxes). It picks the expert's style and the default base mix.
      seed: fixes the problem partition and the base corpus's style / format assignment.
      sizes: problems per split, a `SplitSizes` or a dict overriding some of its defaults.
      task / mix: the problem space and the base corpus's style / format mix (None: the task's
        defaults and the variant's `corpus.VARIANT_MIX`).

    Returns:
      name -> path for pretrain, expert, expert_parquet, expert_val, rl_prompts, eval, tokenizer,
      manifest.
    """
    if variant not in corpus.EXPERT_STYLE:
        raise ValueError(f"unknown toy-world variant {variant!r}; expected one of {sorted(corpus.EXPERT_STYLE)}")
    sizes = corpus.SplitSizes.from_overrides(sizes)
    task = task or TaskSpec()
    mix = mix or corpus.VARIANT_MIX[variant]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    problems = corpus.split_problems(task, sizes, seed)
    pretrain = corpus.pretrain_rows(problems["pretrain"], mix, seed)
    expert = corpus.expert_rows(problems["expert"], variant)
    expert_val = corpus.expert_rows(problems["expert_val"], variant)
    paths = {
        "pretrain": _write_jsonl(out / "pretrain.jsonl", pretrain),
        "expert": _write_jsonl(out / "expert.jsonl", expert),
        "expert_parquet": out / "expert.parquet",
        "expert_val": _write_jsonl(out / "expert_val.jsonl", expert_val),
        "rl_prompts": _write_jsonl(out / "rl_prompts.jsonl", corpus.rl_prompt_rows(problems["rl_prompts"], variant)),
        "eval": _write_jsonl(out / "eval.jsonl", corpus.eval_rows(problems["eval"])),
        "tokenizer": save_tokenizer(out / "tokenizer"),
        "manifest": out / "world.json",
    }
    pq.write_table(pa.Table.from_pylist(expert), paths["expert_parquet"])
    manifest = {
        "variant": variant,
        "seed": seed,
        "expert_style": corpus.EXPERT_STYLE[variant],
        "styles": list(styles.STYLES),
        "task": dataclasses.asdict(task),
        "sizes": dataclasses.asdict(sizes),
        "base_mix": mix_record(mix),
        "vocab_size": len(VOCAB),
        "worst_case": worst_case_lengths(task),
        "base_corpus": base_corpus_stats(pretrain),
        "files": {name: path.name for name, path in paths.items()},
    }
    paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n")
    return paths
