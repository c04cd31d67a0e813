"""Multiple-choice answer extraction and scoring (GPQA, MMLU-Pro, MMLU-Redux, ARC)."""

import pytest

from gift_jax.rewards import ItemStatus, extract_choice, multiple_choice_reward, score_batch


@pytest.mark.parametrize(
    "response, letter",
    [
        ("Comparing the options, the answer is (C).", "C"),
        ("Therefore the final answer is $\\boxed{B}$.", "B"),
        ("\\boxed{\\text{(D)}}", "D"),
        ("Answer: **A**", "A"),
        ("I first thought B, but on reflection it is D", "D"),  # last standalone letter
        ("The answer is (C). A quick check confirms it.", "C"),  # statement beats a trailing article
        ("\\boxed{E} since option A fails", "E"),  # the box beats later letters
        ("Option B\n\nSo: C", "C"),
        ("The answer is a bit subtle; I pick B.", "B"),  # "a" is not an option letter
        ("It is $\\Delta$ and \\mathbb{C}", "C"),  # `\\Delta` is a command, `C` in braces is standalone
        ("ABC and BCD are words, no option", None),
        ("Nothing here", None),
    ],
)
def test_extract_choice(response, letter):
    assert extract_choice(response) == letter


def test_choices_limit_the_letters():
    assert extract_choice("answer is (G)") is None  # paper default: A-E
    assert extract_choice("answer is (G)", "ABCDEFGHIJ") == "G"  # MMLU-Pro
    with pytest.raises(ValueError, match="choices"):
        extract_choice("A", "abc")


@pytest.mark.parametrize(
    "response, ground_truth, reward",
    [
        ("the answer is (C)", "C", 1.0),
        ("the answer is (C)", "(C)", 1.0),
        ("\\boxed{C}", "\\boxed{C}", 1.0),
        ("the answer is (C)", "B", 0.0),
        ("no letter at all", "B", 0.0),
    ],
)
def test_multiple_choice_reward(response, ground_truth, reward):
    assert multiple_choice_reward(response, ground_truth) == reward


def test_batch_multiple_choice_runs_in_process():
    scores = score_batch(
        ["answer is (A)", "\\boxed{B}", "I think C", "answer: J"],
        ["A", "C", "C", "J"],
        kind="multiple_choice",
        choices="ABCDEFGHIJ",
    )
    assert scores.scores.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert scores.timed_out == 0 and scores.crashed == 0


def test_a_ground_truth_without_an_option_letter_scores_zero_and_is_counted():
    scores = score_batch(["A", "B"], ["A", "42"], kind="multiple_choice")
    assert scores.scores.tolist() == [1.0, 0.0]
    assert scores.statuses[1] is ItemStatus.BAD_GROUND_TRUTH and scores.bad_ground_truth == 1
