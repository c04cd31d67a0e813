"""The expensive half of math answer checking: sympy and math-verify. Runs in worker processes.

`symbolic_math_verdict` ORs two checkers, as the official utilities do:
1. sympy: parse both answers (plain text such as `2*sqrt(2)` with a whitelisted `parse_expr`,
   LaTeX through math-verify's LaTeX parser), then `simplify(a - b) == 0`, or, for constants,
   equal numeric values within relative tolerance 1e-4;
2. math-verify: `verify(parse(reference), parse(answer))`, which also understands sets,
   intervals, tuples, equations and matrices.

Safety: model text never reaches `eval`/`sympify`. Plain text is parsed only when every character
and name is on a whitelist, against a namespace without builtins; everything else goes through
the LaTeX grammar (no evaluation). Parsed trees are evaluated only after `is_evaluation_bounded`
approves them. math-verify's own timeouts (signal.alarm, main thread only) are switched off:
the caller bounds time by killing the worker process.
"""
import logging
import re

import sympy
from math_verify import LatexExtractionConfig
from math_verify import parse as math_verify_parse
from math_verify import verify as math_verify_verify
from sympy.parsing.sympy_parser import (
    auto_number,
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
)

from gift_jax.rewards.math_answer import MathItem
from gift_jax.rewards.normalize import normalize_answer
from gift_jax.rewards.sympy_guard import is_evaluation_bounded

# The warning says "provide your own timeout"; the worker pool does.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_NUMERIC_REL_TOL = 1e-4
_LATEX_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0),)

# Plain-text answers: digits, single-letter variables, whitelisted functions, arithmetic.
# No quotes, underscores, brackets, commas, colons or attribute dots can pass, so the code
# `parse_expr` generates can only build sympy numbers, symbols and function applications.
_PLAIN_CHARS = re.compile(r"[0-9A-Za-z+\-*/^().\s]+")
_NUMBER_LITERAL = re.compile(r"\d+\.\d*|\.\d+|\d+")
_IDENTIFIER = re.compile(r"[A-Za-z]+")
_PLAIN_FUNCTIONS = {
    name: getattr(sympy, name)
    for name in ("sqrt", "exp", "log", "sin", "cos", "tan", "cot", "sec", "csc",
                 "asin", "acos", "atan", "sinh", "cosh", "tanh", "Abs")
}
_PLAIN_NAMES = {**_PLAIN_FUNCTIONS, "ln": sympy.log, "pi": sympy.pi}
# What the generated code refers to, and nothing else: in particular no builtins.
_PARSE_GLOBALS = {
    "__builtins__": {},
    **{name: getattr(sympy, name)
       for name in ("Add", "Mul", "Pow", "Integer", "Float", "Rational", "Symbol")},
    **_PLAIN_NAMES,
}
_PARSE_TRANSFORMATIONS = (auto_number, convert_xor, implicit_multiplication_application)


def parse_plain_expression(text: str) -> sympy.Basic | None:
    """Unevaluated sympy tree of a whitelisted plain-text expression, or None.

    Accepts e.g. `2*sqrt(2)`, `x^2 + 2x + 1`, `3 pi/4`; refuses anything with other characters,
    dots outside numbers, or names other than single letters and `_PLAIN_NAMES`.
    """
    if not _PLAIN_CHARS.fullmatch(text) or "." in _NUMBER_LITERAL.sub("", text):
        return None
    names = set(_IDENTIFIER.findall(_NUMBER_LITERAL.sub(" ", text)))
    if any(len(name) > 1 and name not in _PLAIN_NAMES for name in names):
        return None
    symbols = {name: sympy.Symbol(name) for name in names if name not in _PLAIN_NAMES}
    try:
        return parse_expr(
            text,
            local_dict=symbols,
            global_dict=dict(_PARSE_GLOBALS),
            transformations=_PARSE_TRANSFORMATIONS,
            evaluate=False,
        )
    except Exception:  # noqa: BLE001 - any parse failure means "not a plain expression"
        return None


def parse_latex_answer(text: str) -> list:
    """math-verify's parse of a LaTeX answer: [sympy object, source string], or [] if unparsable.

    Uses only the LaTeX grammar (never math-verify's plain-expression extractor, which calls
    `parse_expr` on raw text) and leaves the tree unevaluated.
    """
    return math_verify_parse(
        "\\boxed{" + text + "}", extraction_config=_LATEX_EXTRACTION, parsing_timeout=None
    )


def _as_sympy(answer: str, latex_parsed: list) -> sympy.Basic | None:
    """The answer as a sympy tree: plain-text parse if it is plain text, else the LaTeX parse."""
    plain = parse_plain_expression(normalize_answer(answer))
    if plain is not None:
        return plain
    return next((parsed for parsed in latex_parsed if isinstance(parsed, sympy.Basic)), None)


def _sympy_equal(answer: sympy.Basic | None, reference: sympy.Basic | None) -> bool:
    """simplify(answer - reference) == 0, or equal constants within the numeric tolerance."""
    if answer is None or reference is None:
        return False
    if not (is_evaluation_bounded(answer) and is_evaluation_bounded(reference)):
        return False
    answer, reference = answer.doit(), reference.doit()
    if not (isinstance(answer, sympy.Expr) and isinstance(reference, sympy.Expr)):
        return False  # sets, intervals, equations: math-verify compares those
    if sympy.simplify(answer - reference) == 0:
        return True
    if answer.free_symbols or reference.free_symbols:
        return False
    answer_value, reference_value = complex(sympy.N(answer)), complex(sympy.N(reference))
    return abs(answer_value - reference_value) <= _NUMERIC_REL_TOL * max(
        abs(answer_value), abs(reference_value)
    )


def _math_verify_equal(answer_parsed: list, reference_parsed: list) -> bool:
    """math-verify's verdict on two parses, if both are safe to evaluate."""
    if not answer_parsed or not reference_parsed:
        return False
    if not all(is_evaluation_bounded(parsed) for parsed in answer_parsed + reference_parsed):
        return False
    return math_verify_verify(reference_parsed, answer_parsed, timeout_seconds=None)


def _fails_closed(check, *args) -> bool:
    """Run one checker; a checker that cannot handle the input has not shown equality."""
    try:
        return bool(check(*args))
    except Exception:  # noqa: BLE001 - sympy and the LaTeX grammar raise many exception types
        return False


def symbolic_math_verdict(item: MathItem) -> bool:
    """Whether `item.answer` equals `item.reference` for sympy or for math-verify.

    Unbounded in time on adversarial input despite the guards: call it in a worker process that
    the caller can kill. `item.answer` must not be None (`quick_math_verdict` settles that case).
    """
    answer_parsed = parse_latex_answer(item.answer)
    reference_parsed = parse_latex_answer(item.reference)
    answer_tree = _as_sympy(item.answer, answer_parsed)
    reference_tree = _as_sympy(item.reference, reference_parsed)
    return _fails_closed(_sympy_equal, answer_tree, reference_tree) or _fails_closed(
        _math_verify_equal, answer_parsed, reference_parsed
    )
