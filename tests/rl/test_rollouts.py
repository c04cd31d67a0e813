"""Host-side rollout assembly: LUFFY's expert rows, joining sampling rounds, taking whole groups, round keys."""

import jax
import numpy as np

from gift_jax.rl.dynamic_sampling import round_key
from gift_jax.rl.rollouts import (
    Rollouts,
    concat_rollouts,
    group_correctness,
    group_outcomes,
    insert_expert_rows,
    take_groups,
)
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


def _scored(result: SampleResult, first_prompt: int) -> Rollouts:
    rows = len(result.lengths)
    return Rollouts(
        records=[{"prompt": str(first_prompt + i)} for i in range(rows // G)],
        result=result,
        is_expert=None,
        scores=np.arange(rows, dtype=np.float32) + first_prompt * G,
        rewards=np.arange(rows, dtype=np.float32) + first_prompt * G,
    )


def test_rounds_join_with_prompts_left_padded_and_groups_are_taken_whole():
    wide = _rollouts()
    narrow = wide._replace(prompt_ids=wide.prompt_ids[:, 2:], prompt_mask=wide.prompt_mask[:, 2:])
    joined = concat_rollouts([_scored(narrow, 0), _scored(wide, PROMPTS)], pad_id=0)
    assert joined.result.prompt_ids.shape == (2 * PROMPTS * G, PROMPT_LEN)
    np.testing.assert_array_equal(joined.result.prompt_ids[: PROMPTS * G, 2:], narrow.prompt_ids)
    assert not joined.result.prompt_mask[: PROMPTS * G, :2].any()  # the padding is masked
    np.testing.assert_array_equal(joined.result.completion_ids[PROMPTS * G :], wide.completion_ids)
    assert [r["prompt"] for r in joined.records] == ["0", "1", "2", "3"]
    taken = take_groups(joined, np.array([3, 0]), G)
    assert [r["prompt"] for r in taken.records] == ["3", "0"]
    assert taken.scores.tolist() == [9, 10, 11, 0, 1, 2]  # group 3's rows, then group 0's, in order
    np.testing.assert_array_equal(taken.result.prompt_ids[:G], joined.result.prompt_ids[3 * G : 4 * G])


def test_round_keys_repeat_a_plain_step_first_and_differ_after():
    step_key = jax.random.fold_in(jax.random.key(5), 7)
    assert jax.random.key_data(round_key(5, 7, 0)).tolist() == jax.random.key_data(step_key).tolist()
    keys = {tuple(jax.random.key_data(round_key(5, 7, r)).tolist()) for r in range(4)}
    keys |= {tuple(jax.random.key_data(jax.random.fold_in(step_key, i)).tolist()) for i in range(16)}  # prompt keys
    assert len(keys) == 4 + 16
