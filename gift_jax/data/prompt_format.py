"""One prompt format for every stage: how a question becomes what the model is conditioned on.

The init stage's demonstrations, the RL prompts, RL validation and `experiments/evaluate.py` all build
the prompt the same way: the question, a blank line and the `instruction` as one user turn (after a
system turn with `system_prompt`, when one is set), rendered with the chat template. The format is a
run's setting (`model.prompt` in both stage configs), saved in the run's `config.json`; every HF
export of a run carries it in `prompt_format.json` (and the chat template it trained with), so
evaluating a checkpoint defaults to the prompt it was trained on.

The project default instruction is Qwen's math sentence: the reward reads the last `\\boxed{}` of the
response, so the policy is asked for it in every stage, and `val/avg@k` during RL and `evaluate.py`'s
avg@k on the same problems are the same measurement.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

from gift_jax.data.chat_templates import NAMED_CHAT_TEMPLATES
from gift_jax.storage import as_path

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPT_RECORD = "prompt_format.json"  # in HF exports of a run


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    """instruction: appended to every question (None: the question alone).
    system_prompt: a system turn before it (None: none; the chat template may add its own default)."""

    instruction: str | None = DEFAULT_INSTRUCTION
    system_prompt: str | None = None

    def user_message(self, question: str) -> str:
        """The user turn for `question`: the question (surrounding whitespace removed), a blank line, the
        instruction."""
        question = question.strip()
        return f"{question}\n\n{self.instruction}" if self.instruction else question


def export_files(prompt: PromptFormat, chat_template: str | None) -> dict[str, str]:
    """Files an HF export of a run carries so every reader prompts it as it was trained: `prompt_format.json`,
    and `chat_template.jinja` when the run used a built-in template (`chat_template`, its name) instead of
    the model folder's own (transformers, vLLM and `load_tokenizer` prefer that file to the folder's)."""
    record = {**dataclasses.asdict(prompt), "chat_template": chat_template}
    files = {PROMPT_RECORD: json.dumps(record, indent=2) + "\n"}
    if chat_template is not None:
        files["chat_template.jinja"] = NAMED_CHAT_TEMPLATES[chat_template]
    return files


def read_prompt_record(folder: str | os.PathLike) -> PromptFormat | None:
    """The prompt format an HF export records (None: the folder has no record, e.g. a base model)."""
    path = as_path(folder) / PROMPT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return PromptFormat(instruction=record["instruction"], system_prompt=record["system_prompt"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: unreadable prompt record ({err!r})") from None


def warn_if_trained_otherwise(folder: str | os.PathLike, prompt: PromptFormat, what: str) -> None:
    """Warns when the HF folder `folder` was trained with another prompt format than `prompt` (`what`
    names the setting, e.g. "model.path")."""
    recorded = read_prompt_record(folder)
    if recorded is not None and recorded != prompt:
        warnings.warn(
            f"{what} {folder} was trained with prompt {dataclasses.asdict(recorded)} ({PROMPT_RECORD}), "
            f"this run prompts it with {dataclasses.asdict(prompt)} (model.prompt)",
            stacklevel=2,
        )
