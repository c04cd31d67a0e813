"""Normalisation, plain numbers and the in-process verdict (no sympy, no workers)."""

from fractions import Fraction

import pytest

from gift_jax.rewards.math_answer import MathItem, prepare_math_item, quick_math_verdict
from gift_jax.rewards.normalize import normalize_answer
from gift_jax.rewards.numeric import numbers_match, parse_number


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        ("\\frac12", "\\frac{1}{2}"),
        ("\\frac1{x}", "\\frac{1}{x}"),
        ("3/4", "\\frac{3}{4}"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("\\$5.00", "5"),
        ("10\\text{ cm}", "10"),
        ("90^\\circ", "90"),
        ("x = 5", "5"),
        ("1,000,000", "1000000"),
        ("50\\%", "50"),
        (".5", "0.5"),
        ("12.", "12"),
        ("2\\!\\times\\!10^{3}", "2\\times10^{3}"),
        ("\\text{yes}", "yes"),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_normalize_keeps_tuples_and_equations():
    assert normalize_answer("(1,000, 2)") == "(1,000,2)"
    assert normalize_answer("x + y = 5") == "x+y=5"


@pytest.mark.parametrize(
    "text, value",
    [
        ("42", Fraction(42)),
        ("-0.25", Fraction(-1, 4)),
        ("\\frac{1}{3}", Fraction(1, 3)),
        ("-\\frac{3}{4}", Fraction(-3, 4)),
        ("1.5e3", Fraction(1500)),
        ("2\\times10^{-3}", Fraction(2, 1000)),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["x", "\\frac{1}{0}", "1e400", "9" * 100, "\\sqrt{2}", "1,2", ""])
def test_not_plain_numbers(text):
    assert parse_number(text) is None


def test_numbers_match_exact_and_percent():
    # Integers compare exactly: the former relative tolerance 1e-4 rewarded 10001 for 10000.
    assert not numbers_match(Fraction(10001), Fraction(10000))
    assert not numbers_match(Fraction(10002), Fraction(10000))
    assert numbers_match(Fraction(50), Fraction(1, 2))  # percent of the reference
    assert numbers_match(Fraction(1, 200), Fraction(1, 2))  # reference given in percent
    assert not numbers_match(Fraction(50), Fraction(1, 2), accept_percent=False)
    assert numbers_match(Fraction(0), Fraction(0)) and not numbers_match(Fraction(1, 10**9), Fraction(0))


@pytest.mark.parametrize(
    "response, ground_truth, verdict",
    [
        ("\\boxed{0.5}", "\\frac{1}{2}", True),
        ("\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", True),  # boxed ground truth
        ("\\boxed{50\\%}", "0.5", True),
        ("\\boxed{3}", "4", False),
        ("\\boxed{}", "4", False),
        ("the answer is 4", "4", False),  # no box
        ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", None),  # needs the symbolic check
    ],
)
def test_quick_verdict(response, ground_truth, verdict):
    assert quick_math_verdict(prepare_math_item(response, ground_truth)) is verdict


def test_overlong_answers_compare_as_exact_strings():
    long_answer = "1+" * 600 + "1"
    assert quick_math_verdict(MathItem(long_answer, long_answer)) is True
    assert quick_math_verdict(MathItem(long_answer, "601")) is False


@pytest.mark.parametrize(
    "ground_truth, message",
    [
        ("", "empty ground-truth"),
        ("\\boxed{}", "empty ground-truth"),
        ("\\boxed{3", "unterminated"),
    ],
)
def test_bad_ground_truth_is_a_clear_error(ground_truth, message):
    with pytest.raises(ValueError, match=message):
        prepare_math_item("\\boxed{3}", ground_truth, where="ground_truths[7]")
    with pytest.raises(ValueError, match=r"ground_truths\[7\]"):
        prepare_math_item("\\boxed{3}", ground_truth, where="ground_truths[7]")
