"""The expensive half of math answer checking: sympy and math-verify. Runs in worker processes.

`symbolic_math_verdict` parses both answers (plain text such as `2*sqrt(2)` with a whitelisted
`parse_expr`, LaTeX through math-verify's LaTeX parser). When both are numeric constants, the
verdict is the exact rule of `numeric.py` alone: `a - b` is zero (by `simplify`, or by a 30-digit
evaluation that cancels to nothing), or one side was written as a decimal that is the other's value
rounded or truncated to its written digits. math-verify is not asked then, since it rounds floats
to 6 decimals and would accept near-misses such as `0.33333349` for `1/3`. Otherwise it ORs two
checkers, as the official utilities do:
1. sympy: `simplify(a - b) == 0`;
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
from fractions import Fraction

import sympy
from math_verify import LatexExtractionConfig, parse as math_verify_parse, verify as math_verify_verify
from sympy.parsing.sympy_parser import (
    auto_number,
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
)

from gift_jax.rewards.math_answer import MathItem
from gift_jax.rewards.normalize import normalize_answer
from gift_jax.rewards.numeric import (
    decimal_approximates,
    parse_number,
    terminates,
    written_places,
)
from gift_jax.rewards.sympy_guard import is_evaluation_bounded

# The warning says "provide your own timeout"; the worker pool does.
logging.getLogger("math_verify").setLevel(logging.ERROR)

# A difference of exact constants that evaluates below this at 30 digits is zero: a true nonzero
# difference keeps its significant digits under sympy's adaptive evaluation.
_ZERO_DIFFERENCE = 1e-90
# Digits an irrational value is evaluated to before comparing it with a written decimal.
_APPROXIMATION_DIGITS = 60
_LATEX_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0),)

# Plain-text answers: digits, single-letter variables, whitelisted functions, arithmetic.
# No quotes, underscores, brackets, commas, colons or attribute dots can pass, so the code
# `parse_expr` generates can only build sympy numbers, symbols and function applications.
_PLAIN_CHARS = re.compile(r"[0-9A-Za-z+\-*/^().\s]+")
_NUMBER_LITERAL = re.compile(r"\d+\.\d*|\.\d+|\d+")
_IDENTIFIER = re.compile(r"[A-Za-z]+")
_PLAIN_FUNCTIONS = {
    name: getattr(sympy, name)
    for name in (
        "sqrt",
        "exp",
        "log",
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "asin",
        "acos",
        "atan",
        "sinh",
        "cosh",
        "tanh",
        "Abs",
    )
}
_PLAIN_NAMES = {**_PLAIN_FUNCTIONS, "ln": sympy.log, "pi": sympy.pi}
# What the generated code refers to, and nothing else: in particular no builtins.
_PARSE_GLOBALS = {
    "__builtins__": {},
    **{name: getattr(sympy, name) for name in ("Add", "Mul", "Pow", "Integer", "Float", "Rational", "Symbol")},
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
    return math_verify_parse("\\boxed{" + text + "}", extraction_config=_LATEX_EXTRACTION, parsing_timeout=None)


def _as_sympy(answer: str, latex_parsed: list) -> sympy.Basic | None:
    """The answer as a sympy tree: plain-text parse if it is plain text, else the LaTeX parse."""
    plain = parse_plain_expression(normalize_answer(answer))
    if plain is not None:
        return plain
    return next((parsed for parsed in latex_parsed if isinstance(parsed, sympy.Basic)), None)


def _evaluated(tree: sympy.Basic | None) -> sympy.Expr | None:
    """`tree.doit()` if it is a bounded expression; None for sets, intervals, equations (math-verify
    compares those) and for trees the guard refuses."""
    if tree is None or not is_evaluation_bounded(tree):
        return None
    value = tree.doit()
    return value if isinstance(value, sympy.Expr) else None


def _floats_as_written(expr: sympy.Expr) -> sympy.Expr:
    """`expr` with each float replaced by the exact decimal it prints as (`0.1` -> 1/10).

    The parsers turn `0.1` into a binary float; comparing exactly, `0.1\\pi` would then differ
    from `\\pi/10` in the 17th digit.
    """
    floats = expr.atoms(sympy.Float)
    return expr.xreplace({value: sympy.Rational(str(value)) for value in floats}) if floats else expr


def _exact_value(value: sympy.Expr) -> tuple[Fraction, bool] | None:
    """(value as a Fraction, whether that is exact) of a real constant, or None."""
    if value.is_Rational:
        return Fraction(int(value.p), int(value.q)), True
    approximation = sympy.N(value, _APPROXIMATION_DIGITS)
    if not approximation.is_real or not approximation.is_finite:
        return None
    return Fraction(str(approximation)), False


def _approximates(decimal_text: str, value: sympy.Expr) -> bool:
    """Whether the written decimal `decimal_text` is `value` to its written digits (numeric.py)."""
    places, decimal = written_places(decimal_text), parse_number(decimal_text)
    exact = _exact_value(value)
    if places is None or decimal is None or exact is None:
        return False
    fraction, is_exact = exact
    if is_exact and terminates(fraction):
        return False  # a terminating value is compared exactly, and it was not equal
    return decimal_approximates(decimal, places, fraction)


def _simplify_equal(answer: sympy.Expr, reference: sympy.Expr) -> bool:
    return sympy.simplify(answer - reference) == 0


def _constants_equal(answer: sympy.Expr, reference: sympy.Expr, item: MathItem) -> bool:
    """The exact rule for two numeric constants (module docstring)."""
    answer, reference = _floats_as_written(answer), _floats_as_written(reference)
    if _simplify_equal(answer, reference):
        return True
    difference = answer - reference
    if abs(complex(sympy.N(difference, 30, maxn=400))) < _ZERO_DIFFERENCE:
        return True
    answer_text, reference_text = normalize_answer(item.answer), normalize_answer(item.reference)
    answer_is_decimal = written_places(answer_text) is not None
    reference_is_decimal = written_places(reference_text) is not None
    if answer_is_decimal and not reference_is_decimal:
        return _approximates(answer_text, reference)
    if reference_is_decimal and not answer_is_decimal:
        return _approximates(reference_text, answer)
    return False


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


def _fails_closed_value(check, *args):
    """Run one helper; None if it cannot handle the input."""
    try:
        return check(*args)
    except Exception:  # noqa: BLE001 - sympy raises many exception types
        return None


def symbolic_math_verdict(item: MathItem) -> bool:
    """Whether `item.answer` equals `item.reference` for sympy or for math-verify.

    Unbounded in time on adversarial input despite the guards: call it in a worker process that
    the caller can kill. `item.answer` must not be None (`quick_math_verdict` settles that case).
    """
    answer_parsed = parse_latex_answer(item.answer)
    reference_parsed = parse_latex_answer(item.reference)
    answer = _fails_closed_value(_evaluated, _as_sympy(item.answer, answer_parsed))
    reference = _fails_closed_value(_evaluated, _as_sympy(item.reference, reference_parsed))
    both = answer is not None and reference is not None
    if both and answer.is_number and reference.is_number:
        return _fails_closed(_constants_equal, answer, reference, item)
    return (both and _fails_closed(_simplify_equal, answer, reference)) or _fails_closed(
        _math_verify_equal, answer_parsed, reference_parsed
    )
