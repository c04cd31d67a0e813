"""Evaluating a saved model: the one path from a checkpoint and benchmark specs to avg@k / pass@k.

`experiments/evaluate.py` and the toy pipeline both call `evaluate_checkpoint`, so the same
checkpoint, benchmark spec (file + instruction) and `EvalConfig` give the same numbers from either:
the same weights and compute dtype, the same chat template, the same prompts, the same sampling keys.

    result = evaluate_checkpoint("runs/gift/hf_final", [BenchmarkSpec("toy", path, instruction=None)],
                                 EvalConfig(num_samples=4, temperature=0.6, max_new_tokens=48))
    result.results["toy"].metrics()["avg@4"]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from jax.sharding import Mesh

from gift_jax.data import ChatTokenizer, load_tokenizer
from gift_jax.errors import InputError
from gift_jax.evaluation.benchmarks import BenchmarkSpec
from gift_jax.evaluation.evaluate import BenchmarkResult, EvalConfig, evaluate_benchmarks
from gift_jax.models import Transformer, load_hf
from gift_jax.rewards import RewardScorer
from gift_jax.run_checkpoints import is_run_workdir, load_run_checkpoint, read_run_config, run_chat_template
from gift_jax.storage import as_path


class EvalInputError(InputError):
    """A benchmark file, spec or model path that cannot be read (the message names it)."""


@dataclasses.dataclass
class EvalModel:
    """A model ready to evaluate: weights, tokenizer, and where they came from.

    checkpoint: `{"kind", "step"}` for an orbax step of a stage workdir, None for an HF folder.
    chat_template: the built-in template name in use (None: the model folder's own).
    """

    model: Transformer
    tokenizer: ChatTokenizer
    checkpoint: dict | None
    chat_template: str | None


@dataclasses.dataclass
class CheckpointEvaluation:
    """`evaluate_checkpoint`'s answer: one result per benchmark, and what was evaluated."""

    results: dict[str, BenchmarkResult]
    checkpoint: dict | None
    chat_template: str | None


def load_eval_model(
    model_path: str | os.PathLike,
    *,
    step: int | None = None,
    kind: str = "periodic",
    dtype: str | None = None,
    chat_template: str | None = None,
    mesh: Mesh | None = None,
) -> EvalModel:
    """Loads an HF folder, or one checkpoint of a stage workdir, with the tokenizer it was trained with.

    step / kind: which orbax checkpoint of a workdir (newest `periodic` by default); refused for an
      HF folder. dtype: compute dtype (None: the folder's / run's). chat_template: a built-in
      template name instead of the folder's (a workdir defaults to the template its run used).
    Raises FileNotFoundError / ValueError naming the folder, step or kind that is wrong.
    """
    model_path = as_path(model_path)
    if is_run_workdir(model_path):
        model, _, tokenizer_dir, found_step = load_run_checkpoint(
            model_path, step=step, kind=kind, dtype=dtype, mesh=mesh
        )
        # Prompts formatted as in training: the run's built-in template unless one is given here.
        chat_template = chat_template or run_chat_template(read_run_config(model_path))
        checkpoint = {"kind": kind, "step": found_step}
    else:
        if step is not None or kind != "periodic":
            raise ValueError(
                f"{model_path} is a model folder, not a stage workdir with checkpoints "
                f"(step / kind apply to workdirs only)"
            )
        model, _ = load_hf(model_path, dtype=dtype, mesh=mesh)
        tokenizer_dir, checkpoint = model_path, None
    return EvalModel(model, load_tokenizer(tokenizer_dir, chat_template=chat_template), checkpoint, chat_template)


def evaluate_checkpoint(
    model_path: str | os.PathLike,
    benchmarks: Sequence[BenchmarkSpec],
    config: EvalConfig,
    *,
    step: int | None = None,
    kind: str = "periodic",
    dtype: str | None = None,
    chat_template: str | None = None,
    mesh: Mesh | None = None,
    scorer: RewardScorer | None = None,
    keep_responses: bool = False,
    progress: bool = True,
) -> CheckpointEvaluation:
    """Reads every benchmark spec, loads the model (`load_eval_model`) and evaluates it on each.

    The benchmarks are read before the model is loaded, so a bad file fails in seconds; reading and
    loading errors come as `EvalInputError` (a prompt the tokenizer cannot represent as
    `gift_jax.data.unknown_tokens.UnknownTokenError`), errors of the evaluation itself as they are.
    scorer: a long-lived `RewardScorer` to reuse (one is created and closed here if not given).
    """
    try:
        problems = {spec.name: spec.load() for spec in benchmarks}
        loaded = load_eval_model(model_path, step=step, kind=kind, dtype=dtype, chat_template=chat_template, mesh=mesh)
    except (FileNotFoundError, ValueError) as err:
        raise EvalInputError(str(err)) from err
    results = evaluate_benchmarks(
        loaded.model,
        loaded.tokenizer,
        problems,
        config,
        scorer=scorer,
        mesh=mesh,
        keep_responses=keep_responses,
        progress=progress,
    )
    return CheckpointEvaluation(results, loaded.checkpoint, loaded.chat_template)
