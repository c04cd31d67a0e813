"""Config sections both stages share: the model to train and how a run logs, validates and checkpoints.

Every range is checked when the section is built, i.e. when the config is loaded (the loader turns the
`ValueError` into a message naming the key), before any data is tokenized or weights are read.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar, Literal

from gift_jax.data.chat_templates import NAMED_CHAT_TEMPLATES
from gift_jax.data.prompt_format import PromptFormat
from gift_jax.models.config import ATTENTION_BACKENDS

Dtype = Literal["float32", "bfloat16", "float16"]


def require_at_least(section, minimum: int, *names: str) -> None:
    """Raises one ValueError listing every `name` of `section` below `minimum` (None counts as unset)."""
    problems = [
        f"{name} must be >= {minimum}, got {getattr(section, name)}"
        for name in names
        if getattr(section, name) is not None and getattr(section, name) < minimum
    ]
    if problems:
        raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class ModelSection:
    path: str  # local Hugging Face folder the policy starts from
    base_path: str | None = None  # the frozen base (reference); init stage default: `path` itself
    dtype: Dtype = "float32"  # compute dtype ("bfloat16" on accelerators)
    param_dtype: Dtype = "float32"  # policy master weights
    base_param_dtype: Dtype | None = None  # storage dtype of the frozen base (default: param_dtype)
    remat: bool = False  # gradient checkpointing per decoder layer
    scan_layers: bool = False  # training forward as one scan over the layers (ModelConfig.scan_layers)
    attention: str = "auto"  # auto | xla | blockwise | splash | cudnn (gift_jax.models.attention)
    chat_template: str | None = None  # None: the model folder's; or "qwen-2.5-math", "llama-3", "plain"
    # How questions become prompts in every stage (instruction, system prompt; gift_jax.data.prompt_format).
    prompt: PromptFormat = PromptFormat()

    def __post_init__(self):
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"model.attention={self.attention!r} is not one of {list(ATTENTION_BACKENDS)}")
        if self.chat_template is not None and self.chat_template not in NAMED_CHAT_TEMPLATES:
            raise ValueError(
                f"model.chat_template={self.chat_template!r} is not one of {sorted(NAMED_CHAT_TEMPLATES)} "
                f"(or null: the model folder's own)"
            )


@dataclasses.dataclass(frozen=True)
class RunSection:
    """Seeds and intervals (counted in loop steps, the numbers checkpoints and metrics carry)."""

    # Keys a resumed run may change (how the run goes on, not what it computes; `runtime.workdir.check_resume`).
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        "max_steps",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "checkpoint_every_minutes",
        "max_to_keep",
        "export_hf",
        "max_consecutive_skipped",
    )

    seed: int = 0
    max_steps: int | None = None  # stop early (the LR schedule still spans the whole run)
    log_every: int = 10  # loop steps per console progress line (metrics.jsonl gets every step)
    eval_every: int | None = None  # loop steps between validations (None: the stage's default)
    checkpoint_every: int | None = None  # loop steps between checkpoints (None: the stage's default)
    # Also checkpoint once this many minutes have passed since the last one (bounds what a kill -9 loses).
    checkpoint_every_minutes: float | None = None
    max_to_keep: int = 3
    export_hf: bool = True  # write hf_best/ and hf_final/ folders at the end
    max_consecutive_skipped: int = 10  # non-finite updates in a row that end the run (TrainingDiverged)

    def __post_init__(self):
        require_at_least(
            self,
            1,
            "max_steps",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "max_to_keep",
            "max_consecutive_skipped",
        )
        require_at_least(self, 0, "seed")
        minutes = self.checkpoint_every_minutes
        if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
            raise ValueError(f"checkpoint_every_minutes must be > 0 (or null), got {minutes}")


def placement_problems(config, num_devices: int, *, check_paths: bool = True) -> tuple[int, list[str]]:
    """`(devices the batch is split over, problems)` of a stage config: the mesh must fit the devices,
    and the data files (`data.train_file` / `data.val_file`) and model folders (`model.path` /
    `model.base_path`) must exist. Every problem names its key. `check_paths=False` skips the files
    and folders (a compile-only fit check needs neither)."""
    problems = []
    try:
        data, fsdp, _ = config.mesh.resolve(num_devices)
    except ValueError as err:
        problems.append(str(err))
        data = fsdp = 1
    for name in ("train_file", "val_file") if check_paths else ():
        path = getattr(config.data, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"data.{name}: {path} does not exist")
    for name in ("path", "base_path") if check_paths else ():
        path = getattr(config.model, name)
        if path is not None and not (Path(path) / "config.json").is_file():
            problems.append(f"model.{name}: {path} has no config.json")
    return data * fsdp, problems
