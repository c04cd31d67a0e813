"""The symbolic checker's safety pieces: the plain-text whitelist and the evaluation guard."""

import pytest
import sympy

from gift_jax.rewards.math_answer import MathItem
from gift_jax.rewards.symbolic import parse_latex_answer, parse_plain_expression, symbolic_math_verdict
from gift_jax.rewards.sympy_guard import is_evaluation_bounded


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2*sqrt(2)", 2 * sympy.sqrt(2)),
        ("x^2 + 2x + 1", sympy.Symbol("x") ** 2 + 2 * sympy.Symbol("x") + 1),
        ("3 pi/4", 3 * sympy.pi / 4),
        ("ln(2)", sympy.log(2)),
    ],
)
def test_plain_parse_accepts_math(text, expected):
    assert sympy.simplify(parse_plain_expression(text).doit() - expected) == 0


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "exec(chr(116))",  # whitelisted characters, but names that are not math
        "x.__class__",
        "(1).real",
        "lambda x: x",
        "open(x)",
        "[x for x in y]",
        "1, 2",
    ],
)
def test_plain_parse_refuses_code(text):
    assert parse_plain_expression(text) is None


def test_plain_parse_does_not_evaluate():
    tower = parse_plain_expression("9^9^9^9")
    assert tower is not None and not tower.is_Integer  # an unevaluated power tower


@pytest.mark.parametrize(
    "expr, bounded",
    [
        (sympy.Pow(2, 1000, evaluate=False), True),
        (sympy.Pow(9, sympy.Pow(9, 9, evaluate=False), evaluate=False), False),
        (sympy.Pow(sympy.Symbol("x"), 10**9, evaluate=False), False),
        (sympy.factorial(100, evaluate=False), True),
        (sympy.factorial(10**6, evaluate=False), False),
        (sympy.Integer(10) ** 5000, False),
        (sympy.Interval(0, sympy.Pow(10, 10**8, evaluate=False)), False),
        (sympy.Matrix([[1, sympy.Pow(7, 10**7, evaluate=False)]]), False),
        ("a string from math-verify", True),
    ],
)
def test_evaluation_guard(expr, bounded):
    assert is_evaluation_bounded(expr) is bounded


def test_guard_survives_deep_trees():
    expr = sympy.Symbol("x")
    for _ in range(5000):
        expr = sympy.Add(expr, 1, evaluate=False)
    assert is_evaluation_bounded(expr)


def test_latex_parse_keeps_giant_powers_unevaluated():
    parsed = parse_latex_answer("9^{9^{9^{9}}}")
    assert parsed and not is_evaluation_bounded(parsed[0])


@pytest.mark.parametrize(
    "answer, reference, equal",
    [
        ("9^{9^{9^{9}}}", "9^{9^{9^{9}}}+1", False),  # refused by the guard, quickly
        ("2^{10}", "1024", True),
        ("\\frac{\\pi}{2}", "1.5708", True),  # numeric tolerance 1e-4 on constants
        ("\\sin^2 x + \\cos^2 x", "1", True),
    ],
)
def test_symbolic_verdict(answer, reference, equal):
    assert symbolic_math_verdict(MathItem(answer, reference)) is equal
