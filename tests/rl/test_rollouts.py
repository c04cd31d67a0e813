"""`insert_expert_rows`: LUFFY's groups get the expert completion appended after each prompt's rollouts."""

import numpy as np

from gift_jax.rl.rollouts import group_correctness, group_outcomes, insert_expert_rows
from gift_jax.rollout import SampleResult

PROMPTS, G, PROMPT_LEN, NEW = 2, 3, 4, 5


def _rollouts() -> SampleResult:
    rows = PROMPTS * G
    prompt_ids = np.repeat(np.arange(1, PROMPTS + 1)[:, None] * 10 + np.arange(PROMPT_LEN), G, axis=0)
    completion_ids = 100 + np.arange(rows * NEW).reshape(rows, NEW)
    lengths = np.array([5, 3, 1, 2, 5, 4])
    completion_mask = (np.arange(NEW)[None] < lengths[:, None]).astype(np.int32)
    return SampleResult(
        prompt_ids=prompt_ids.astype(np.int32),
        prompt_mask=np.ones((rows, PROMPT_LEN), np.int32),
        completion_ids=completion_ids.astype(np.int32),
        completion_mask=completion_mask,
        lengths=lengths.astype(np.int32),
        truncated=lengths == NEW,
        logprobs=np.full((rows, NEW), -0.5, np.float32),
        entropies=np.ones((rows, NEW), np.float32),
    )


def test_each_group_ends_with_its_expert_row():
    result = _rollouts()
    expert_ids = np.array([[7, 7, 7, 0, 0], [8, 8, 8, 8, 8]], np.int32)
    expert_mask = (expert_ids > 0).astype(np.int32)
    merged, is_expert = insert_expert_rows(result, expert_ids, expert_mask, G, expert_truncated=np.array([False, True]))

    assert is_expert.tolist() == [False, False, False, True] * PROMPTS
    on_policy = ~is_expert
    for name in SampleResult._fields:  # the sampled rows are kept, in order
        np.testing.assert_array_equal(getattr(merged, name)[on_policy], getattr(result, name), err_msg=name)
    np.testing.assert_array_equal(merged.completion_ids[is_expert], expert_ids)
    np.testing.assert_array_equal(merged.completion_mask[is_expert], expert_mask)
    # An expert row is conditioned on its own group's prompt.
    np.testing.assert_array_equal(merged.prompt_ids[is_expert], result.prompt_ids[::G])
    np.testing.assert_array_equal(merged.prompt_mask[is_expert], result.prompt_mask[::G])
    assert merged.lengths[is_expert].tolist() == [3, 5]
    assert merged.truncated[is_expert].tolist() == [False, True]
    # Not sampled: no sampling log-probs or entropies (the training forward recomputes them).
    assert not merged.logprobs[is_expert].any() and not merged.entropies[is_expert].any()


def test_expert_rows_are_not_truncated_unless_told():
    result = _rollouts()
    expert_ids = np.ones((PROMPTS, NEW), np.int32)
    merged, is_expert = insert_expert_rows(result, expert_ids, expert_ids, G)
    assert not merged.truncated[is_expert].any() and merged.lengths[is_expert].tolist() == [NEW, NEW]


def test_group_outcomes_read_correct_with_the_shared_threshold():
    rewards = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1], np.float32)  # 4 prompts x 3 rollouts
    grouped = rewards.reshape(-1, 3)
    assert (
        group_outcomes(rewards, 3)
        == {  # 0/1 rewards: the same numbers as min >= 1 / max <= 0
            "groups_all_correct": float(np.mean(grouped.min(axis=1) >= 1.0)),
            "groups_all_wrong": float(np.mean(grouped.max(axis=1) <= 0.0)),
        }
        == {"groups_all_correct": 0.25, "groups_all_wrong": 0.25}
    )
    noisy = np.array([0.9999999, 1.0, 1e-8, 0.0], np.float32)  # float noise flips nothing
    assert group_correctness(noisy, 2).tolist() == [[True, True], [False, False]]
