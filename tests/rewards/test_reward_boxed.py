"""Final-answer extraction: the last `\\boxed{}` with brace matching."""

import time

import pytest

from gift_jax.rewards import last_boxed_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is $\\boxed{42}$.", "42"),
        ("\\boxed{1} first, then \\boxed{2} last", "2"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("$\\boxed 7$ done", "7"),
        ("\\boxed x = 3\nmore text", "x = 3"),
        ("\\fbox{5}", "5"),
        ("\\boxed{1} and \\fbox{9}", "9"),
        ("\\boxed{}", ""),
        ("\\boxed{  12 }", "12"),
        ("\\boxed\n{3}", "3"),
        ("\\boxed{4} then \\boxedanswer{5}", "4"),  # another macro, not a box
    ],
)
def test_extracts_last_box(text, expected):
    assert last_boxed_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no box here, the answer is 4",
        "\\boxed{3} and a truncated \\boxed{4",  # the last box never closes: no answer
        "",
    ],
)
def test_no_answer(text):
    assert last_boxed_answer(text) is None


def test_deep_nesting_is_linear():
    depth = 100_000
    text = "\\boxed{" + "{" * depth + "7" + "}" * depth + "}"
    start = time.perf_counter()
    answer = last_boxed_answer(text)
    assert time.perf_counter() - start < 2.0
    assert answer == "{" * depth + "7" + "}" * depth
    assert last_boxed_answer("\\boxed{" + "{" * depth) is None


def test_many_box_mentions_are_linear():
    text = "\\boxedx " * 200_000 + "\\boxed{1}" + " \\boxedy" * 200_000
    start = time.perf_counter()
    assert last_boxed_answer(text) == "1"
    assert time.perf_counter() - start < 2.0
