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

from gift_jax.data import ChatTokenizer, PromptFormat, load_tokenizer
from gift_jax.data.prompt_format import PROMPT_RECORD, read_prompt_record
from gift_jax.errors import InputError
from gift_jax.evaluation.benchmarks import CHECKPOINT_INSTRUCTIONS, BenchmarkSpec
from gift_jax.evaluation.evaluate import BenchmarkResult, EvalConfig, evaluate_benchmarks
from gift_jax.models import Transformer, load_hf
from gift_jax.rewards import RewardScorer
from gift_jax.runtime.run_checkpoints import is_run_workdir, load_run_checkpoint, read_run_model
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


@dataclasses.dataclass(frozen=True)
class CheckpointPrompt:
    """The prompt a checkpoint was trained with (`gift_jax.data.prompt_format`) and where that was read."""

    prompt: PromptFormat
    chat_template: str | None  # the run's built-in template (None: the model folder's own)
    source: str  # e.g. "runs/gift/config.json (model.prompt)"


def checkpoint_prompt(model_path: str | os.PathLike) -> CheckpointPrompt:
    """A stage workdir's `model.prompt`, an export's `prompt_format.json`, else the project default (a folder
    no run of this project wrote, e.g. a base model)."""
    model_path = as_path(model_path)
    if is_run_workdir(model_path):
        section = read_run_model(model_path)
        return CheckpointPrompt(section.prompt, section.chat_template, f"{model_path / 'config.json'} (model.prompt)")
    recorded = read_prompt_record(model_path)
    if recorded is not None:
        return CheckpointPrompt(recorded, None, str(model_path / PROMPT_RECORD))
    return CheckpointPrompt(PromptFormat(), None, f"the project default ({model_path} has no {PROMPT_RECORD})")


def prompt_warnings(
    trained: CheckpointPrompt, specs: Sequence[BenchmarkSpec], system_prompt: str | None, chat_template: str | None
) -> list[str]:
    """What differs from the prompt the checkpoint was trained with: benchmark instructions (math), the
    system prompt and the chat template. Accuracies measured otherwise are not the run's `val/avg@k`."""
    warnings = []
    for spec in specs:
        math_instruction, _ = spec.instructions(trained.prompt.instruction)
        if math_instruction != trained.prompt.instruction:
            warnings.append(
                f"benchmark {spec.name}: math problems end in {math_instruction!r}, the checkpoint was trained "
                f"with {trained.prompt.instruction!r} ({trained.source})"
            )
    if system_prompt != trained.prompt.system_prompt:
        warnings.append(
            f"system prompt {system_prompt!r}; the checkpoint was trained with {trained.prompt.system_prompt!r} "
            f"({trained.source})"
        )
    if chat_template is not None and chat_template != trained.chat_template:
        trained_template = repr(trained.chat_template) if trained.chat_template else "its model folder's own"
        warnings.append(
            f"chat template {chat_template!r}; the checkpoint was trained with {trained_template} ({trained.source})"
        )
    return warnings


@dataclasses.dataclass
class CheckpointEvaluation:
    """`evaluate_checkpoint`'s answer: one result per benchmark, and what was evaluated."""

    results: dict[str, BenchmarkResult]
    checkpoint: dict | None
    chat_template: str | None
    prompt: dict  # the prompt used and the one the checkpoint was trained with, and `warnings` where they differ


def load_eval_model(
    model_path: str | os.PathLike,
    *,
    step: int | None = None,
    kind: str = "periodic",
    dtype: str | None = None,
    chat_template: str | None = None,
    mesh: Mesh | None = None,
    system_prompt: str | None = None,
) -> EvalModel:
    """Loads an HF folder, or one checkpoint of a stage workdir, with the tokenizer it was trained with.

    step / kind: which orbax checkpoint of a workdir (newest `periodic` by default); refused for an
      HF folder. dtype: compute dtype (None: the folder's / run's). chat_template: a built-in
      template name instead of the folder's (a workdir defaults to the template its run used).
      system_prompt: a system turn before every prompt (None: none).
    Raises FileNotFoundError / ValueError naming the folder, step or kind that is wrong.
    """
    model_path = as_path(model_path)
    if is_run_workdir(model_path):
        model, _, tokenizer_dir, found_step = load_run_checkpoint(
            model_path, step=step, kind=kind, dtype=dtype, mesh=mesh
        )
        # Prompts formatted as in training: the run's built-in template unless one is given here.
        chat_template = chat_template or read_run_model(model_path).chat_template
        checkpoint = {"kind": kind, "step": found_step}
    else:
        if step is not None or kind != "periodic":
            raise ValueError(
                f"{model_path} is a model folder, not a stage workdir with checkpoints "
                f"(step / kind apply to workdirs only)"
            )
        model, _ = load_hf(model_path, dtype=dtype, mesh=mesh)
        tokenizer_dir, checkpoint = model_path, None
    tokenizer = load_tokenizer(tokenizer_dir, chat_template=chat_template, system_prompt=system_prompt)
    return EvalModel(model, tokenizer, checkpoint, chat_template)


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
    system_prompt: str | None = CHECKPOINT_INSTRUCTIONS,
) -> CheckpointEvaluation:
    """Reads every benchmark spec, loads the model (`load_eval_model`) and evaluates it on each.

    Prompts are formed as the checkpoint was trained (`checkpoint_prompt`): a spec's "checkpoint"
    instruction is the checkpoint's, and `system_prompt` "checkpoint" (the default) its system prompt
    (None: no system turn). Where the prompt differs from the training one, `prompt["warnings"]` says how.

    The benchmarks are read before the model is loaded, so a bad file fails in seconds; reading and
    loading errors come as `EvalInputError` (a prompt the tokenizer cannot represent as
    `gift_jax.data.unknown_tokens.UnknownTokenError`), errors of the evaluation itself as they are.
    scorer: a long-lived `RewardScorer` to reuse (one is created and closed here if not given).
    """
    try:
        trained = checkpoint_prompt(model_path)
        if system_prompt == CHECKPOINT_INSTRUCTIONS:
            system_prompt = trained.prompt.system_prompt
        problems = {spec.name: spec.load(trained.prompt.instruction) for spec in benchmarks}
        loaded = load_eval_model(
            model_path,
            step=step,
            kind=kind,
            dtype=dtype,
            chat_template=chat_template,
            mesh=mesh,
            system_prompt=system_prompt,
        )
    except (FileNotFoundError, ValueError) as err:
        raise EvalInputError(str(err)) from err
    prompt = {
        "trained_with": {**dataclasses.asdict(trained.prompt), "chat_template": trained.chat_template},
        "trained_with_source": trained.source,
        "math_instructions": {spec.name: spec.instructions(trained.prompt.instruction)[0] for spec in benchmarks},
        "system_prompt": system_prompt,
        "warnings": prompt_warnings(trained, benchmarks, system_prompt, chat_template),
    }
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
    return CheckpointEvaluation(results, loaded.checkpoint, loaded.chat_template, prompt)
