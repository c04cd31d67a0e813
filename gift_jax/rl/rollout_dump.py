"""Rollouts you can read: a bounded JSONL sample of an RL step's rollouts and of its validation samples.

With `train.dump_rollouts_every` set, every that many RL steps (and at the last) the loop writes
`WORKDIR/rollouts/step_<N>.jsonl`, one object per rollout of the step's first whole groups, at most
`train.dump_rollouts_rows` rows (the prompts are in the stream's shuffled order, so the first groups
are a fair sample):

    step, prompt (the user turn), chat_prompt (the prompt's tokens decoded with their special tokens:
    exactly what the policy was conditioned on), completion (decoded, special tokens dropped), answer,
    reward, length (generated tokens, stop token included), truncated, advantage, expert (LUFFY's
    off-policy rows)

and each validation, `WORKDIR/rollouts/val_step_<N>.jsonl`, one object per problem (at most
`train.dump_rollouts_rows`): step, prompt, chat_prompt, answer, completions, correct. verl's
`trainer.rollout_data_dir` is the model. Process 0 writes; a file is written whole, so an
object-store workdir takes it too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gift_jax.data import ChatTokenizer
from gift_jax.rl.grpo import grpo_advantages
from gift_jax.rollout import SampleResult
from gift_jax.storage import as_path

DUMP_FOLDER = "rollouts"


def rollout_rows(
    step: int,
    tokenizer: ChatTokenizer,
    result: SampleResult,
    rewards: np.ndarray,
    is_expert: np.ndarray | None,
    records: Sequence[dict],
    *,
    prompt_key: str,
    answer_key: str,
    group_size: int,
    norm_by_std: bool,
    max_rows: int,
) -> list[dict]:
    """The dump rows of one step's rollouts: `[B]` rows grouped by prompt (`group_size` per record), of
    which the first whole groups up to `max_rows` rows (at least one group)."""
    advantages = np.asarray(grpo_advantages(jnp.asarray(rewards), group_size, norm_by_std=norm_by_std))
    groups = min(len(records), max(1, max_rows // group_size))
    rows = []
    for row in range(groups * group_size):
        record, n = records[row // group_size], int(result.lengths[row])
        prompt_ids = result.prompt_ids[row][result.prompt_mask[row] == 1]
        rows.append(
            {
                "step": step,
                "prompt": record[prompt_key],
                "chat_prompt": tokenizer.decode(prompt_ids.tolist()),
                "completion": tokenizer.decode(result.completion_ids[row, :n].tolist(), skip_special_tokens=True),
                "answer": record[answer_key],
                "reward": float(rewards[row]),
                "length": n,
                "truncated": bool(result.truncated[row]),
                "advantage": float(advantages[row]),
                "expert": bool(is_expert[row]) if is_expert is not None else False,
            }
        )
    return rows


def validation_rows(step: int, samples: Sequence[dict], *, max_rows: int) -> list[dict]:
    """The dump rows of one validation: its first `max_rows` problems (`BenchmarkResult.samples`)."""
    return [
        {
            "step": step,
            "prompt": sample["prompt"],
            "chat_prompt": sample["chat_prompt"],
            "answer": sample["answer"],
            "completions": sample["responses"],
            "correct": sample["correct"],
        }
        for sample in samples[:max_rows]
    ]


def write_dump(workdir, name: str, rows: Sequence[dict]) -> None:
    """`WORKDIR/rollouts/<name>.jsonl`, written whole by process 0."""
    if jax.process_index() != 0:
        return
    folder = as_path(workdir) / DUMP_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
