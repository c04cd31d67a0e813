"""Evaluating a toy checkpoint: pass@k / avg@k through the shared `evaluate_checkpoint`, the style and
answer-format shares of its samples, and its per-style skill."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import jax

from gift_jax.data import load_tokenizer
from gift_jax.evaluation.benchmarks import BenchmarkSpec
from gift_jax.evaluation.checkpoint_eval import evaluate_checkpoint
from gift_jax.evaluation.evaluate import EvalConfig
from gift_jax.evaluation.metrics import mean_pass_at_k
from gift_jax.models import load_hf
from gift_jax.rewards import RewardScorer
from gift_jax.rollout import SamplingConfig, run_engine
from gift_jax.toy.presets import Preset
from gift_jax.toy.styles import BOXED_PREFIX, STYLE_HEADERS, classify_style


def eval_spec(preset: Preset, files: dict) -> BenchmarkSpec:
    # The toy prompts carry no instruction: the toy tokenizer knows no English.
    return BenchmarkSpec("toy_eval", files["eval"], instruction=None, limit=preset.eval_problems)


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
        result, _ = run_engine(model, prompts, config, jax.random.key(0))
        texts = [
            tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(result.completion_ids, result.lengths)
        ]
        final = [re.findall(r"\d+", text)[-1:] for text in texts]
        skill[f"greedy_acc_{style}"] = sum(f == [p.answer] for f, p in zip(final, problems)) / len(problems)
    return skill
