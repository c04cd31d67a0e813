"""Math answer checking end to end: a table of equivalent and different answers.

The whole table is scored as one batch (symbolic rows run in parallel in the workers); each row
is then its own test case.
"""

import pytest

from gift_jax.rewards import ItemStatus, RewardScorer, math_reward

# (response, ground truth, expected score)
TABLE = [
    # fractions, decimals, percentages
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "1/2", 1.0),
    ("\\boxed{50\\%}", "0.5", 1.0),
    ("\\boxed{0.5}", "50\\%", 1.0),
    ("\\boxed{0.3333}", "\\frac{1}{3}", 1.0),  # within relative tolerance 1e-4
    ("\\boxed{0.33}", "\\frac{1}{3}", 0.0),
    ("\\boxed{1,000}", "1000", 1.0),
    ("\\boxed{2\\times10^{3}}", "2000", 1.0),
    # equivalent expressions
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    ("\\boxed{(x+1)^2}", "x^2 + 2x + 1", 1.0),
    ("\\boxed{2*sqrt(2)}", "2\\sqrt{2}", 1.0),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", 1.0),  # nested braces
    ("\\boxed{\\frac{\\pi}{2}}", "\\pi/2", 1.0),
    ("\\boxed{x^2+2x}", "(x+1)^2", 0.0),
    ("\\boxed{\\sqrt{2}}", "\\sqrt{3}", 0.0),
    # intervals, tuples, sets, equations
    ("\\boxed{[1, 2)}", "[1,2)", 1.0),
    ("\\boxed{(3, -\\frac{1}{2})}", "(3,-0.5)", 1.0),
    ("\\boxed{(3,-1)}", "(3,-2)", 0.0),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", 1.0),
    ("\\boxed{x = 5}", "5", 1.0),
    ("\\boxed{y = 2x + 1}", "y=2x+1", 1.0),
    # units and text
    ("\\boxed{10\\text{ cm}}", "10", 1.0),
    ("\\boxed{90^\\circ}", "90", 1.0),
    # which box, and no box
    ("First \\boxed{3}, corrected: \\boxed{4}", "4", 1.0),
    ("First \\boxed{4}, corrected: \\boxed{3}", "4", 0.0),
    ("\\boxed{}", "4", 0.0),
    ("The answer is 4.", "4", 0.0),
    ("\\boxed{4}", "\\boxed{4}", 1.0),  # boxed ground truth
    ("\\boxed{3}", "4", 0.0),
]


@pytest.fixture(scope="module")
def table_scores():
    with RewardScorer(num_workers=2) as scorer:
        return scorer.score([row[0] for row in TABLE], [row[1] for row in TABLE])


@pytest.mark.parametrize("row", range(len(TABLE)), ids=[f"{r!r}~{g!r}" for r, g, _ in TABLE])
def test_equivalence_table(table_scores, row):
    response, ground_truth, expected = TABLE[row]
    assert table_scores.statuses[row] is ItemStatus.OK
    assert table_scores.scores[row] == expected, (response, ground_truth)


def test_math_reward_single_calls():
    assert math_reward("so $\\boxed{2\\sqrt{2}}$", "\\sqrt{8}") == 1.0
    assert math_reward("so $\\boxed{2\\sqrt{3}}$", "\\sqrt{8}") == 0.0
    assert math_reward("no box", "1") == 0.0
