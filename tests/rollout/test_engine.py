"""The continuous-batching engine against the static sampler: scheduling never changes the samples."""

import dataclasses

import jax
import numpy as np
import pytest

from gift_jax.rollout import SamplingConfig, run_engine, sample
from tests.rollout.test_sampler import PROMPTS, tiny_policy

BUDGETS = [20, 5, 13, 20]  # per-prompt budgets: some rows truncate early, others stop on 3 or 7


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_engine_with_1_3_64_slots_equals_static_sampler(policy, temperature):
    config = SamplingConfig(
        max_new_tokens=20, num_samples=3, temperature=temperature, stop_ids=(3, 7), decode_steps_per_call=4
    )
    static = sample(policy, PROMPTS, config, jax.random.key(4), budgets=BUDGETS)
    assert static.truncated.any() and (~static.truncated).any()  # a mix of stops and cut rows
    assert len(set(static.lengths.tolist())) >= 3
    for slots in (1, 3, 64):
        engine, stats = run_engine(
            policy, PROMPTS, dataclasses.replace(config, max_concurrent_rows=slots), jax.random.key(4), budgets=BUDGETS
        )
        for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "lengths", "truncated"):
            np.testing.assert_array_equal(
                getattr(engine, name), getattr(static, name), err_msg=f"{name}, {slots} slots"
            )
        np.testing.assert_allclose(engine.logprobs, static.logprobs, atol=1e-5, err_msg=f"{slots} slots")
        np.testing.assert_allclose(engine.entropies, static.entropies, atol=1e-5, err_msg=f"{slots} slots")
        assert stats.slots == min(slots, 12) and stats.generated_tokens == static.lengths.sum()
        assert 0 < stats.slot_occupancy <= 1


def test_samples_of_a_prompt_share_one_prefill(policy):
    config = SamplingConfig(
        max_new_tokens=20, num_samples=3, stop_ids=(3, 7), max_concurrent_rows=64, decode_steps_per_call=4
    )
    _, stats = run_engine(policy, PROMPTS, config, jax.random.key(4), budgets=BUDGETS)
    assert stats.prefilled_prompts == len(PROMPTS)


def test_a_rows_draws_do_not_depend_on_the_other_rows(policy):
    """Keyed by (prompt, sample, position): prompt 0's samples are the same alone or in a batch."""
    config = SamplingConfig(max_new_tokens=12, num_samples=2, temperature=1.0)
    together = sample(policy, PROMPTS, config, jax.random.key(9))
    alone = sample(policy, PROMPTS[:1], config, jax.random.key(9))
    np.testing.assert_array_equal(alone.completion_ids, together.completion_ids[:2])
    assert (together.completion_ids[0] != together.completion_ids[1]).any()  # samples still differ


def test_engine_sample_entry_point_and_bad_budgets(policy):
    config = SamplingConfig(max_new_tokens=8, num_samples=2, max_concurrent_rows=3, decode_steps_per_call=4)
    result = sample(policy, PROMPTS, config, jax.random.key(1))
    assert result.completion_ids.shape == (8, 8) and (result.lengths == 8).all() and result.truncated.all()
    with pytest.raises(ValueError, match="budget 9 of prompt 1"):
        sample(policy, PROMPTS, config, jax.random.key(1), budgets=[1, 9, 1, 1])
    with pytest.raises(ValueError, match="max_concurrent_rows"):
        SamplingConfig(max_new_tokens=8, max_concurrent_rows=0)
