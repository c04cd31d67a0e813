"""One RL step's prompts and rollouts, with DAPO's dynamic sampling when `algo.dynamic_sampling` is on.

Without it a step samples one round: the next `prompts_per_step` prompts of the stream. With it the
step keeps drawing rounds of `prompts_per_step` new prompts until `prompts_per_step` groups whose
answer scores are not all equal (`filter_groups`) are collected, or `algo.max_sampling_rounds` rounds
are drawn. The filter reads the answer scores, not the shaped rewards, as DAPO's recipe does (verl's
`filter_groups.metric=acc`): a group whose answers are all wrong is dropped even when the overlong
penalty tells its rows apart. It trains on the first `prompts_per_step` such groups, in stream order
(verl's DAPO trainer does the same); kept groups beyond those are discarded with the rest of the round. When the rounds
run out first, the batch is filled up with dropped groups whose rows leave the loss (completion
mask 0), so the update keeps its shapes, and the metrics say how many groups were short.

Exact resume: the rounds of a step draw from the prompt stream in order and the stream's position
is saved with the step's checkpoint; round `r` of step `s` samples with key `round_key(seed, s, r)`,
and the engine keys every row by (prompt index in the round, sample index). So a resumed run draws
the same prompts with the same keys as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from gift_jax.data.prompt_stream import PromptStream
from gift_jax.rl.dapo import filter_groups
from gift_jax.rl.rollouts import Rollouts, concat_rollouts, take_groups

# Round r > 0 of a step folds ROUND_KEY_OFFSET + r into the step's key: the engine folds prompt
# indices (< 2**31) into a round's key, so no round's key is any other round's prompt key. Round 0
# uses the step's key itself (a step without dynamic sampling samples exactly as before).
ROUND_KEY_OFFSET = 2**31


def round_key(seed: int, step: int, round_index: int) -> jax.Array:
    """The sampling key of round `round_index` of RL step `step`."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    return key if round_index == 0 else jax.random.fold_in(key, ROUND_KEY_OFFSET + round_index)


def sample_step(
    sample_round: Callable[[list[dict], int], Rollouts],
    stream: PromptStream,
    *,
    prompts: int,
    group_size: int,
    pad_id: int,
    dynamic: bool,
    max_rounds: int,
) -> tuple[Rollouts, np.ndarray, Rollouts, dict[str, float]]:
    """Draws the step's rounds -> `(trained, trained_groups, sampled, metrics)`.

    sample_round: `(records, round index) -> Rollouts` of those prompts (`group_size` rows each).
    trained: exactly `prompts` groups; trained_groups `[prompts]` bool marks the ones that go into the
      loss (all of them without dynamic sampling). sampled: every round's rollouts (for the rollout
      metrics, and for algorithms that look at every sampled question, as ReLIFT does).
    metrics: with dynamic sampling, the rounds drawn, the groups kept and how many were short.
    """
    rounds: list[Rollouts] = []
    kept_groups = 0
    for round_index in range(max_rounds if dynamic else 1):
        rounds.append(sample_round(stream.next_batch(prompts), round_index))
        kept_groups += int(np.sum(filter_groups(rounds[-1].scores, group_size)))
        if kept_groups >= prompts:
            break
    sampled = concat_rollouts(rounds, pad_id) if len(rounds) > 1 else rounds[0]
    if not dynamic:
        return sampled, np.ones(prompts, bool), sampled, {}
    keep = np.asarray(filter_groups(sampled.scores, group_size))
    kept = np.flatnonzero(keep)[:prompts]
    filler = np.flatnonzero(~keep)[: prompts - len(kept)]
    trained = take_groups(sampled, np.concatenate([kept, filler]), group_size)
    metrics = {
        "sampling_rounds": float(len(rounds)),
        "groups_kept": float(len(kept)),
        "groups_short": float(prompts - len(kept)),
        "groups_with_signal_frac": float(keep.mean()),
    }
    return trained, np.arange(prompts) < len(kept), sampled, metrics
