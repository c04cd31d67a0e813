"""Reject parsed answers whose exact evaluation would build astronomically large numbers.

`9^{9^{9^{9}}}` parses in microseconds (unevaluated), but simplifying it asks for an integer with
more digits than atoms in the universe, inside C code that no signal interrupts. Before any
evaluation we bound, for every node of the unevaluated tree, the number of decimal digits of its
value, and refuse trees that exceed `MAX_DIGITS` anywhere. Symbols count as 1 digit: for a
symbolic base the bound is on the work of expanding powers, not on a value.
"""

import math

import sympy

# Python refuses int <-> str conversions above 4300 digits by default; staying below that keeps
# every printed or compared integer legal as well as cheap.
MAX_DIGITS = 4000
_LOG10_2 = math.log10(2)
# An exponent bound above 10**15 digits is infinite for our purposes (and would overflow float).
_MAX_EXPONENT_LOG10 = 15.0
# Functions whose exact value grows faster than exponentially in their argument.
_FAST_GROWING_FUNCTIONS = frozenset(
    {
        "factorial",
        "factorial2",
        "subfactorial",
        "gamma",
        "binomial",
        "RisingFactorial",
        "FallingFactorial",
        "fibonacci",
        "lucas",
        "tribonacci",
        "catalan",
        "bell",
        "primorial",
        "multinomial",
        "Product",
    }
)


def _integer_digits(value: int) -> float:
    return max(abs(value).bit_length() * _LOG10_2, 1.0)


def _node_digits(node: sympy.Basic, child_digits: list[float]) -> float:
    """Upper bound on the decimal digits of `node`'s exact value, given its children's bounds."""
    if node.is_Integer:
        return _integer_digits(int(node))
    if node.is_Rational:
        return max(_integer_digits(node.p), _integer_digits(node.q))
    if node.is_Pow:
        base_digits, exponent_digits = child_digits
        if exponent_digits > _MAX_EXPONENT_LOG10:
            return math.inf
        # |exponent| < 10**exponent_digits, and |base**exponent| has at most that many times
        # the base's digits.
        return 10.0**exponent_digits * max(base_digits, _LOG10_2)
    if node.is_Mul:
        return sum(child_digits)
    if node.is_Add:
        return max(child_digits) + math.log10(len(child_digits))
    if type(node).__name__ in _FAST_GROWING_FUNCTIONS:
        largest_argument_digits = max(child_digits, default=1.0)
        if largest_argument_digits > _MAX_EXPONENT_LOG10:
            return math.inf
        # n! < n**n: at most n * log10(n) digits for an argument below n = 10**digits.
        return 10.0**largest_argument_digits * largest_argument_digits
    # Atoms (symbols, floats, constants) and tame functions (sin, log, Abs, intervals, ...).
    return max(child_digits, default=1.0)


def _children(node: object) -> tuple:
    if isinstance(node, sympy.MatrixBase):
        return tuple(node)
    return getattr(node, "args", ())


def is_evaluation_bounded(expr: object, max_digits: float = MAX_DIGITS) -> bool:
    """Whether no sub-expression of `expr` (sympy object or matrix) exceeds `max_digits` digits.

    Iterative post-order walk, so arbitrarily deep trees cannot exhaust the Python stack.
    Objects that are not sympy trees (for example the strings math-verify returns) have no
    numeric value and pass.
    """
    digits: dict[int, float] = {}
    stack: list[tuple[object, bool]] = [(expr, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in digits:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children)
            continue
        if not isinstance(node, sympy.Basic):
            node_digits = max((digits[id(child)] for child in children), default=1.0)
        else:
            node_digits = _node_digits(node, [digits[id(child)] for child in children])
        if node_digits > max_digits:
            return False
        digits[id(node)] = node_digits
    return True
