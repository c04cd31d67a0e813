"""Answers the published graders' suites still miss (mixed numbers, Indian digit grouping, a boxed
option with its text), and a malformed ground truth at scoring time: 0 and a count, never a raise."""

import pytest

from gift_jax.rewards import ItemStatus, RewardScorer, math_reward
from gift_jax.rewards.math_answer import prepare_math_item, quick_math_verdict
from gift_jax.rewards.normalize import normalize_answer

# (response, ground truth, expected score); each is settled in this process, without sympy.
TABLE = [
    # mixed numbers: a whole number and a proper fraction
    ("\\boxed{3128 1/2}", "3128.5", 1.0),
    ("\\boxed{3128.5}", "3128 1/2", 1.0),
    ("\\boxed{3\\frac{1}{2}}", "\\frac{7}{2}", 1.0),
    ("\\boxed{3 \\frac12}", "3.5", 1.0),
    ("\\boxed{-2\\tfrac{1}{4}}", "-2.25", 1.0),
    ("\\boxed{3128 1/2}", "15640.5", 0.0),  # not 31281/2: the space separates two numbers
    ("\\boxed{3128 1/2}", "3128", 0.0),
    # Indian digit grouping (typeset separators)
    ("\\boxed{56,\\!01,\\!78,\\!95,\\!760}", "56017895760", 1.0),
    ("\\boxed{56017895760}", "56,\\!01,\\!78,\\!95,\\!760", 1.0),
    ("\\boxed{1{,}00{,}000}", "100000", 1.0),
    ("\\boxed{56,\\!01,\\!78,\\!95,\\!761}", "56017895760", 0.0),
    ("\\boxed{56,\\!01,\\!78}", "560178", 0.0),  # not a grouping (two digits last)
    # a boxed option with its text
    ("\\boxed{C. x = 42}", "C", 1.0),
    ("\\boxed{(C) 42}", "C", 1.0),
    ("\\boxed{C}", "C) x = 42", 1.0),
    ("\\boxed{(B)}", "B", 1.0),
    ("\\boxed{D. x = 42}", "C", 0.0),
    ("\\boxed{C. x = 41}", "C. x = 42", 0.0),  # both with text: the text counts
]


@pytest.mark.parametrize("response, ground_truth, expected", TABLE)
def test_missed_cases_are_settled_in_process(response, ground_truth, expected):
    verdict = quick_math_verdict(prepare_math_item(response, ground_truth))
    if expected:
        assert verdict is True
    else:
        assert verdict in (False, None)


def test_missed_cases_score_end_to_end():
    with RewardScorer(num_workers=1, timeout_s=20.0) as scorer:
        scores = scorer.score([row[0] for row in TABLE], [row[1] for row in TABLE])
    assert scores.scores.tolist() == [row[2] for row in TABLE]
    assert set(scores.statuses) == {ItemStatus.OK}


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("3128 1/2", "\\frac{6257}{2}"),
        ("3\\frac{5}{2}", "3\\frac{5}{2}"),  # an improper fraction is no mixed number
        ("12,34,567", "12,34,567"),  # plain commas: possibly a list, left alone
        ("1{,}00{,}000", "100000"),
    ],
)
def test_normalized_forms(raw, normalized):
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize("ground_truth", ["", "   ", "\\boxed{}", "\\boxed{3", "\\frac{1}{2"])
def test_a_malformed_ground_truth_scores_zero_and_is_counted(ground_truth):
    assert math_reward("\\boxed{3}", ground_truth) == 0.0  # never raises
    with RewardScorer(num_workers=1) as scorer:
        scores = scorer.score(["\\boxed{3}", "\\boxed{3}"], ["3", ground_truth])
    assert scores.scores.tolist() == [1.0, 0.0]
    assert scores.statuses == (ItemStatus.OK, ItemStatus.BAD_GROUND_TRUTH)
    assert (scores.bad_ground_truth, scores.timed_out, scores.crashed) == (1, 0, 0)
