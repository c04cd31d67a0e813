"""DAPO's overlong penalty against TRL's soft overlong punishment (ported in `reference_ports.py`),
and the group filter of dynamic sampling."""

import jax
import numpy as np
import pytest

from gift_jax.rl import filter_groups, grpo_advantages, overlong_penalty
from tests.rl import reference_ports as ref


@pytest.mark.parametrize("max_len, buffer", [(100, 20), (40, 8), (16, 16), (10, 1)])
def test_overlong_penalty_equals_trl(max_len, buffer):
    lengths = np.arange(0, max_len + 6)
    ours = jax.jit(overlong_penalty, static_argnames=("max_len", "buffer"))(lengths, max_len=max_len, buffer=buffer)
    np.testing.assert_allclose(ours, ref.soft_overlong_punishment(lengths, max_len, buffer), rtol=1e-6, atol=1e-7)


def test_overlong_penalty_by_hand():
    # TRL's docstring example: 90 tokens with max 100 and a buffer of 20 -> -0.5.
    np.testing.assert_allclose(
        overlong_penalty(np.array([80, 90, 100, 101]), max_len=100, buffer=20), [0, -0.5, -1, -1]
    )


@pytest.mark.parametrize("buffer", [0, 41])
def test_overlong_buffer_must_fit(buffer):
    with pytest.raises(ValueError, match="need 1 <= buffer <= max_len"):
        overlong_penalty(np.array([3]), max_len=40, buffer=buffer)


def test_filter_keeps_exactly_the_groups_with_a_learning_signal():
    rewards = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0.7, 0.7, 0.7, 0.70001], np.float32)
    kept = np.asarray(filter_groups(rewards, 4))
    np.testing.assert_array_equal(kept, [False, False, True, True])
    # A dropped group is one whose advantages are all zero: it could not move the policy.
    advantages = np.asarray(grpo_advantages(rewards, 4)).reshape(4, 4)
    np.testing.assert_array_equal(np.any(advantages != 0, axis=1), kept)


def test_filter_checks_the_grouping():
    with pytest.raises(ValueError, match="filter_groups: 6 rewards do not split into groups of 4"):
        filter_groups(np.zeros(6), 4)
