"""Hostile responses: each is answered within 10 s, without raising and without running code."""

import time

import pytest

from gift_jax.rewards import ItemStatus, RewardScorer, math_reward

MEGABYTE = 1_000_000
DEPTH = 100_000


@pytest.fixture(scope="module")
def scorer():
    with RewardScorer(num_workers=2, timeout_s=5.0) as scorer:
        yield scorer


def _score_one(scorer, response, ground_truth):
    start = time.perf_counter()
    scores = scorer.score([response], [ground_truth])
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"took {elapsed:.1f} s"
    return scores.scores[0], scores.statuses[0]


@pytest.mark.parametrize(
    "response, ground_truth",
    [
        ("\\boxed{" + "{" * DEPTH + "1" + "}" * DEPTH + "}", "1"),  # 100k-deep braces
        ("\\boxed{" + "{" * DEPTH + "1", "1"),  # 100k unclosed braces
        ("\\boxed{" + "(" * 400 + "1" + ")" * 400 + "}", "2"),  # deep but short enough to parse
        ("\\boxed{" + "\\frac{" * 150 + "1" + "}{2}" * 150 + "}", "3"),
        ("\\boxed{9^{9^{9^{9}}}}", "1"),  # power tower: refused before evaluation
        ("\\boxed{10^{10^{10}}}", "10"),
        ("\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "4"),
        ("\\boxed{(10^{6})!}", "1"),
        ("\\boxed{9^{9^{9^{9}}} - 9^{9^{9^{9}}}}", "0"),
        ("\\boxed{" + "9" * MEGABYTE + "}", "9"),  # megabyte answer
        ("x" * MEGABYTE, "1"),  # megabyte response without a box
        ("\\boxed{" + "x+" * (MEGABYTE // 2) + "1}", "1"),
    ],
)
def test_hostile_math_scores_zero_quickly(scorer, response, ground_truth):
    score, status = _score_one(scorer, response, ground_truth)
    assert score == 0.0
    assert status is ItemStatus.OK  # refused by the guards, not rescued by the timeout


def test_megabyte_of_boxes_still_finds_the_last(scorer):
    score, status = _score_one(scorer, "\\boxed{7} " * (MEGABYTE // 10) + "\\boxed{1}", "1")
    assert (score, status) == (1.0, ItemStatus.OK)


@pytest.mark.parametrize(
    "template",
    [
        "\\boxed{{__import__('os').system('touch {marker}')}}",
        "\\boxed{{exec(\"import os; os.system('touch {marker}')\")}}",
        "\\boxed{{eval(compile(\"open('{marker}', 'w')\", 'x', 'exec'))}}",
        "$__import__('os').system('touch {marker}')$",
        "\\boxed{{\\text{{__import__('os').system('touch {marker}')}}}}",
    ],
)
def test_code_is_never_run(scorer, tmp_path, template):
    marker = tmp_path / "pwned"
    code_answer = template.format(marker=marker)
    score, _ = _score_one(scorer, code_answer, "1")
    assert score == 0.0
    # The ground truth goes through the same parsers.
    score, _ = _score_one(scorer, "\\boxed{1}", code_answer.replace("$", ""))
    assert score == 0.0
    assert math_reward(code_answer, "2") == 0.0
    assert not marker.exists()
