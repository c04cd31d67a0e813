"""Plain numbers in normalised answers, and the numeric comparison rule.

Recognises integers, decimals, scientific notation (`1.5e3`, `1.5\\times10^{3}`) and fractions of
integers (`\\frac{1}{2}`, `-\\frac{3}{4}`); anything else is left to the symbolic check. Parsing
is a regex match plus `fractions.Fraction`, so it is cheap and never evaluates the text.

The comparison rule (`numbers_match`, and `decimal_approximates` for the symbolic check):

- Integers, fractions and terminating decimals are exact values and compare exactly: `12346` is
  not `12345`, `1.0001` is not `1`, `0.125` is not `0.13`.
- A decimal is accepted for a value that has no terminating decimal form (`1/3`, `\\pi/2`) only as
  that value rounded or truncated to the digits the decimal was written with, and only when it is
  also within relative 1e-4 of it (the bound used before this rule, so no answer is accepted now
  that was refused before): `0.3333` and `0.33333` for `1/3`, `1.5708` or `1.5707` for `\\pi/2`;
  not `0.3334`, not `1.5709`, and not the coarse `0.33` or `0.333`.
- A percentage may stand for its fraction and back (`50` for `0.5`, `0.5` for `50\\%`), exactly.
"""

import math
import re
from fractions import Fraction

# Longer digit strings are not plain numbers a grader needs to compare numerically; the limit
# also keeps the exact arithmetic below trivially cheap.
MAX_NUMBER_CHARS = 64
# Decimal exponents beyond float range are not compared numerically.
_MAX_DECIMAL_EXPONENT = 300
# An approximation must also be this close, relatively (the tolerance used before the rule above).
APPROXIMATION_REL_TOL = Fraction(1, 10_000)

_DECIMAL = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_POWER_OF_TEN = r"(?:\\times|\\cdot|\*)10\^(?:\{(?P<braced>[-+]?\d+)\}|(?P<bare>\d))"
_SCIENTIFIC = re.compile(rf"^(?P<mantissa>{_DECIMAL})(?:[eE](?P<e>[-+]?\d+)|{_POWER_OF_TEN})?$")
_FRACTION = re.compile(r"^(?P<sign>-?)\\frac\{(?P<num>-?\d+)\}\{(?P<den>-?\d+)\}$")


def _scientific_parts(text: str) -> tuple[str, int] | None:
    """(mantissa, decimal exponent) of a plain decimal / scientific number, or None."""
    if not text or len(text) > MAX_NUMBER_CHARS:
        return None
    scientific = _SCIENTIFIC.match(text)
    if not scientific:
        return None
    exponent = int(scientific["e"] or scientific["braced"] or scientific["bare"] or "0")
    if abs(exponent) > _MAX_DECIMAL_EXPONENT:
        return None
    return scientific["mantissa"], exponent


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
    parts = _scientific_parts(text)
    if parts is None:
        return None
    mantissa, exponent = parts
    return Fraction(mantissa) * Fraction(10) ** exponent


def written_places(text: str) -> int | None:
    """Decimal places a plain decimal was written to (`"0.333"` -> 3, `"1.5e3"` -> -2), or None.

    None for integers (`"12"`, `"2\\times10^{3}"`) and fractions: those are exact values, not
    approximations.
    """
    parts = _scientific_parts(text)
    if parts is None or "." not in parts[0]:
        return None
    mantissa, exponent = parts
    return len(mantissa.split(".", 1)[1]) - exponent


def terminates(value: Fraction) -> bool:
    """Whether `value` has a finite decimal expansion (its denominator is 2^a 5^b)."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def decimal_approximates(decimal: Fraction, places: int, value: Fraction) -> bool:
    """Whether `decimal`, written to `places` decimal places, is `value` rounded or truncated.

    `value` must be a non-terminating value (or a close enough rational stand-in for an
    irrational one, see `symbolic.py`); the caller checks that. Also requires the relative
    closeness `APPROXIMATION_REL_TOL`.
    """
    scale = Fraction(10) ** places
    scaled = value * scale
    truncated = Fraction(math.trunc(scaled)) / scale
    rounded = Fraction(math.floor(scaled + Fraction(1, 2))) / scale
    if decimal not in (truncated, rounded):
        return False
    return abs(decimal - value) <= APPROXIMATION_REL_TOL * max(abs(decimal), abs(value))


def numbers_match(
    answer: Fraction,
    reference: Fraction,
    *,
    answer_places: int | None = None,
    reference_places: int | None = None,
    accept_percent: bool = True,
) -> bool:
    """Whether `answer` equals `reference` by the rule in the module docstring.

    `answer_places` / `reference_places`: the decimal places a side was written to when it was
    written as a decimal (`written_places`), None when it is an integer or a fraction. With
    `accept_percent`, `reference * 100` and `reference / 100` are accepted too.
    """
    candidates = [reference]
    if accept_percent:
        candidates += [reference * 100, reference / 100]
    for candidate in candidates:
        if answer == candidate:
            return True
        approximate = answer_places is not None and not terminates(candidate)
        if approximate and decimal_approximates(answer, answer_places, candidate):
            return True
    if reference_places is not None and not terminates(answer):
        return decimal_approximates(reference, reference_places, answer)
    return False
