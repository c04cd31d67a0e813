"""Plain numbers in normalised answers, and the official tolerant numeric comparison.

Recognises integers, decimals, scientific notation (`1.5e3`, `1.5\\times10^{3}`) and fractions of
integers (`\\frac{1}{2}`, `-\\frac{3}{4}`); anything else is left to the symbolic check. Parsing
is a regex match plus `fractions.Fraction`, so it is cheap and never evaluates the text.
"""
import re
from fractions import Fraction

# Longer digit strings are not plain numbers a grader needs to compare numerically; the limit
# also keeps the exact arithmetic below trivially cheap.
MAX_NUMBER_CHARS = 64
# Decimal exponents beyond float range are not compared numerically.
_MAX_DECIMAL_EXPONENT = 300

_DECIMAL = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_POWER_OF_TEN = r"(?:\\times|\\cdot|\*)10\^(?:\{(?P<braced>[-+]?\d+)\}|(?P<bare>\d))"
_SCIENTIFIC = re.compile(rf"^(?P<mantissa>{_DECIMAL})(?:[eE](?P<e>[-+]?\d+)|{_POWER_OF_TEN})?$")
_FRACTION = re.compile(r"^(?P<sign>-?)\\frac\{(?P<num>-?\d+)\}\{(?P<den>-?\d+)\}$")


def parse_number(text: str) -> Fraction | None:
    """Exact value of a normalised plain-number string, or None if it is not one.

    Examples: `"0.5"` -> 1/2, `"-\\frac{3}{4}"` -> -3/4, `"2\\times10^{3}"` -> 2000.
    """
    if not text or len(text) > MAX_NUMBER_CHARS:
        return None
    fraction = _FRACTION.match(text)
    if fraction:
        denominator = int(fraction["den"])
        if denominator == 0:
            return None
        value = Fraction(int(fraction["num"]), denominator)
        return -value if fraction["sign"] else value
    scientific = _SCIENTIFIC.match(text)
    if not scientific:
        return None
    exponent_text = scientific["e"] or scientific["braced"] or scientific["bare"] or "0"
    exponent = int(exponent_text)
    if abs(exponent) > _MAX_DECIMAL_EXPONENT:
        return None
    return Fraction(scientific["mantissa"]) * Fraction(10) ** exponent


def numbers_match(
    answer: Fraction, reference: Fraction, *, rel_tol: float = 1e-4, accept_percent: bool = True
) -> bool:
    """Whether `answer` equals `reference` up to relative tolerance `rel_tol`.

    With `accept_percent`, `reference * 100` and `reference / 100` are accepted too, as in the
    official utilities: `50` for a reference of `0.5` (an answer given in percent) and vice versa.
    Exact zero matches only exact zero, as `math.isclose` with a relative tolerance does.
    """
    candidates = [reference]
    if accept_percent:
        candidates += [reference * 100, reference / 100]
    return any(
        abs(answer - candidate) <= rel_tol * max(abs(answer), abs(candidate))
        for candidate in candidates
    )
