"""Host-side assembly of rollout batches: sampled (and expert) completions -> update-step arrays.

Rows are grouped by prompt (prompt i's rollouts at rows i*G ... i*G+G-1), as `grpo_advantages`
expects. All arrays are numpy; the loop shards them onto the mesh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gift_jax.rewards import is_correct
from gift_jax.rollout import SampleResult


class Rollouts(NamedTuple):
    """Scored rollouts of some prompts, `group_size` consecutive rows per prompt (B rows in all)."""

    records: list[dict]  # one per prompt
    result: SampleResult  # incl. any expert rows (LUFFY)
    is_expert: np.ndarray | None  # [B] bool, or None when the algorithm adds no expert rows
    scores: np.ndarray  # [B] float32 answer scores (1.0 correct, 0.0 not)
    rewards: np.ndarray  # [B] float32 what the advantages are computed from: scores + any shaping


def take_groups(rollouts: Rollouts, groups: np.ndarray, group_size: int) -> Rollouts:
    """The rollouts of prompts `groups` (`[k]` indices), in that order."""
    groups = np.asarray(groups, np.int64)
    rows = (groups[:, None] * group_size + np.arange(group_size)).reshape(-1)
    return Rollouts(
        records=[rollouts.records[g] for g in groups],
        result=SampleResult(*(field[rows] for field in rollouts.result)),
        is_expert=None if rollouts.is_expert is None else rollouts.is_expert[rows],
        scores=rollouts.scores[rows],
        rewards=rollouts.rewards[rows],
    )


def concat_rollouts(parts: Sequence[Rollouts], pad_id: int) -> Rollouts:
    """Rollouts of several sampling rounds as one; prompts are left-padded to the widest round's width."""
    width = max(part.result.prompt_ids.shape[1] for part in parts)

    def widened(result: SampleResult) -> SampleResult:
        pad = ((0, 0), (width - result.prompt_ids.shape[1], 0))
        return result._replace(
            prompt_ids=np.pad(result.prompt_ids, pad, constant_values=pad_id),
            prompt_mask=np.pad(result.prompt_mask, pad, constant_values=0),
        )

    results = [widened(part.result) for part in parts]
    return Rollouts(
        records=[record for part in parts for record in part.records],
        result=SampleResult(*(np.concatenate(fields) for fields in zip(*results, strict=True))),
        is_expert=None if parts[0].is_expert is None else np.concatenate([part.is_expert for part in parts]),
        scores=np.concatenate([part.scores for part in parts]),
        rewards=np.concatenate([part.rewards for part in parts]),
    )


def completion_arrays(completions: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded `[B, width]` ids and mask from token lists (longer ones are cut at `width`)."""
    ids = np.full((len(completions), width), pad_id, np.int32)
    mask = np.zeros((len(completions), width), np.int32)
    for row, tokens in enumerate(completions):
        tokens = list(tokens)[:width]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def insert_expert_rows(
    result: SampleResult,
    expert_ids: np.ndarray,
    expert_mask: np.ndarray,
    samples_per_prompt: int,
    expert_truncated: np.ndarray | None = None,
) -> tuple[SampleResult, np.ndarray]:
    """LUFFY groups: after each prompt's `samples_per_prompt` rollouts, append its expert completion.

    Returns the enlarged result (group size `samples_per_prompt + 1`; expert rows get log-prob 0 and
    `truncated` from `expert_truncated` `[num_prompts]`, False when not given) and the `[B]` bool
    `is_expert` flags.
    """
    num_prompts = len(expert_ids)
    g = samples_per_prompt

    def grouped(on_policy: np.ndarray, expert: np.ndarray) -> np.ndarray:
        on_policy = on_policy.reshape(num_prompts, g, *on_policy.shape[1:])
        return np.concatenate([on_policy, expert[:, None]], axis=1).reshape(num_prompts * (g + 1), *on_policy.shape[2:])

    zeros = np.zeros(expert_ids.shape, np.float32)
    expert_rows = {
        "prompt_ids": result.prompt_ids.reshape(num_prompts, g, -1)[:, 0],
        "prompt_mask": result.prompt_mask.reshape(num_prompts, g, -1)[:, 0],
        "completion_ids": expert_ids,
        "completion_mask": expert_mask,
        "lengths": expert_mask.sum(axis=1).astype(np.int32),
        "truncated": np.zeros(num_prompts, bool) if expert_truncated is None else np.asarray(expert_truncated, bool),
        "logprobs": zeros,
        "entropies": zeros,  # not sampled: recomputed by the training forward
    }
    merged = SampleResult(**{name: grouped(getattr(result, name), expert_rows[name]) for name in SampleResult._fields})
    is_expert = np.tile(np.arange(g + 1) == g, num_prompts)
    return merged, is_expert


def update_batch(
    result: SampleResult,
    advantages: np.ndarray,
    is_expert: np.ndarray | None = None,
    *,
    trained_rows: np.ndarray | None = None,
) -> dict:
    """The arrays `rl_train_step` reads (see `gift_jax.rl.step`), from prompts + completions, and the
    sampler's own log-probs of the completions (`rollout_logprobs` `[B, N]`, for the mismatch metrics
    and correction). `trained_rows` (`[B]` bool): rows outside it keep their place but leave the loss
    (their completion mask is 0)."""
    full = np.concatenate([result.prompt_ids, result.completion_ids], axis=1)
    full_mask = np.concatenate([result.prompt_mask, result.completion_mask], axis=1)
    attention_mask = full_mask[:, :-1]
    batch = {
        "input_ids": full[:, :-1].astype(np.int32),
        "attention_mask": attention_mask.astype(np.int32),
        "positions": np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0).astype(np.int32),
        "targets": result.completion_ids.astype(np.int32),
        "completion_mask": result.completion_mask.astype(np.float32)
        * (1.0 if trained_rows is None else np.asarray(trained_rows, np.float32)[:, None]),
        "rollout_logprobs": result.logprobs.astype(np.float32),
        "advantages": np.asarray(advantages, np.float32),
        "is_expert": np.zeros(len(full), bool) if is_expert is None else np.asarray(is_expert, bool),
    }
    return batch


def group_correctness(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """`[B / group_size, group_size]` bool: which rollouts of each prompt's group are correct
    (`gift_jax.rewards.is_correct`; rows of one prompt are consecutive)."""
    return is_correct(np.asarray(rewards).reshape(-1, group_size))


def group_outcomes(rewards: np.ndarray, group_size: int) -> dict[str, float]:
    """Share of prompts whose rollouts were all correct / all wrong (no learning signal either way)."""
    correct = group_correctness(rewards, group_size)
    return {
        "groups_all_correct": float(np.mean(correct.all(axis=1))),
        "groups_all_wrong": float(np.mean(~correct.any(axis=1))),
    }
