"""The continuous-batching engine against the static reference: scheduling never changes the samples."""

import dataclasses

import jax
import numpy as np
import pytest

from gift_jax.rollout import SamplingConfig, run_engine
from gift_jax.rollout.engine import shrink_plan, spread_over_devices
from tests.rollout.test_sampler import PROMPTS, tiny_policy

BUDGETS = [20, 5, 13, 20]  # per-prompt budgets: some rows truncate early, others stop on 3 or 7


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


# (slots, page size, pages per device): one slot, three, more slots than rows, small pages, and a pool
# of 12 pages of 4 positions for 12 rows of up to 30: rows wait for pages, and some are preempted.
SCHEDULES = [(1, 64, None), (3, 16, None), (64, 64, None), (12, 4, 12), (6, 8, 9)]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_engine_for_any_slots_and_pages_equals_the_static_reference(policy, temperature):
    config = SamplingConfig(
        max_new_tokens=20, num_samples=3, temperature=temperature, stop_ids=(3, 7), decode_steps_per_call=4
    )
    static = run_engine(policy, PROMPTS, config, jax.random.key(4), budgets=BUDGETS)[0]
    assert static.truncated.any() and (~static.truncated).any()  # a mix of stops and cut rows
    assert len(set(static.lengths.tolist())) >= 3
    preempted = 0
    for slots, page_size, pages in SCHEDULES:
        schedule = dataclasses.replace(config, max_concurrent_rows=slots, page_size=page_size, pages_per_device=pages)
        engine, stats = run_engine(policy, PROMPTS, schedule, jax.random.key(4), budgets=BUDGETS)
        label = f"{slots} slots, pages of {page_size}, pool {pages}"
        for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "lengths", "truncated"):
            np.testing.assert_array_equal(getattr(engine, name), getattr(static, name), err_msg=f"{name}, {label}")
        np.testing.assert_allclose(engine.logprobs, static.logprobs, atol=1e-5, err_msg=label)
        np.testing.assert_allclose(engine.entropies, static.entropies, atol=1e-5, err_msg=label)
        assert stats.slots == min(slots, 12) and stats.generated_tokens == static.lengths.sum()
        assert 0 < stats.slot_occupancy <= 1
        assert stats.slot_steps <= stats.decode_steps * stats.slots
        if not stats.preempted_rows:  # each prompt prefilled once, its samples spread over rounds or not
            assert stats.prefilled_prompts == len(PROMPTS), label
        preempted += stats.preempted_rows
    assert preempted > 0  # the small pools made rows give their pages back, and nothing changed


def test_a_pool_too_small_for_one_row_is_refused(policy):
    config = SamplingConfig(max_new_tokens=20, max_concurrent_rows=2, page_size=4, pages_per_device=3)
    with pytest.raises(ValueError, match="cannot hold the longest row"):
        run_engine(policy, PROMPTS, config, jax.random.key(0))


def test_shrinking_the_tail_keeps_the_samples_and_decodes_fewer_slots(policy):
    config = SamplingConfig(
        max_new_tokens=20,
        num_samples=3,
        temperature=1.0,
        stop_ids=(3, 7),
        max_concurrent_rows=64,
        decode_steps_per_call=4,
    )
    shrunk, stats = run_engine(policy, PROMPTS, config, jax.random.key(4), budgets=BUDGETS)
    full, full_stats = run_engine(
        policy, PROMPTS, dataclasses.replace(config, shrink_tail=False), jax.random.key(4), budgets=BUDGETS
    )
    np.testing.assert_array_equal(shrunk.completion_ids, full.completion_ids)
    np.testing.assert_array_equal(shrunk.lengths, full.lengths)
    np.testing.assert_allclose(shrunk.logprobs, full.logprobs, atol=1e-5)
    assert full_stats.slot_steps == full_stats.decode_steps * 12  # 12 rows: every slot, every step
    assert stats.decode_steps == full_stats.decode_steps and stats.slot_steps < full_stats.slot_steps
    assert stats.slot_occupancy > full_stats.slot_occupancy


@pytest.mark.parametrize(
    ("live", "blocks", "keep"),
    [
        ("x.......", 1, [0]),  # one live row: down to one slot
        (".x..x...x.......", 1, [1, 4, 8, 0]),  # live slots first, then idle ones fill the width
        ("xx.....x", 2, [0, 1, 3, 0]),  # two devices: each keeps its own live rows, local indices
        ("xxx.....", 2, None),  # device 0's three rows do not fit its share of 4 slots
        ("........", 1, None),
        ("xxxxx...", 1, None),
    ],
)
def test_the_tail_halves_while_each_devices_live_rows_fit(live, blocks, keep):
    plan = shrink_plan(np.array([c == "x" for c in live]), blocks)
    assert (plan is None and keep is None) or plan.tolist() == keep


def test_new_rows_are_spread_over_the_devices():
    occupied = np.array([c == "x" for c in "x...xx.."])
    assert spread_over_devices(occupied, 4, blocks=2) == [1, 2, 6, 3]  # the device with more free slots first
    assert spread_over_devices(occupied, 3) == [1, 2, 3]
