"""MATH-style normalisation of a final-answer string (Hendrycks et al. / verl `strip_string`).

Two answers that normalise to the same string are equal; the rules remove typesetting that does
not change the value (`\\left`, `\\!`, `$`, `\\dfrac`, units in `\\text{}`, `\\mathcal{}`, degree
signs, a leading `x =`, thousands separators, trailing periods, spaces). A thousands separator is
a comma between groups of exactly three digits with no space after it: `1,000` is 1000, while
`32, 349` is a list and `56,01,78` is not a number. Indian digit grouping (`56,\\!01,\\!78,\\!95,\\!760`:
three digits last, pairs before them) is read when its commas are typeset as separators (`,\\!` or
`{,}`); with plain commas `12,34,567` may be a list and is left alone. A mixed number (`3128 1/2`,
`3\\frac{1}{2}`: a whole number and a proper fraction) becomes one fraction (`\\frac{6257}{2}`).
Every rule is a plain string or regex pass without nested quantifiers, so normalisation is linear
in the length of the answer.
"""

import re

# Typesetting that never changes a value: sizing, thin spaces, display style.
_DROPPED_TOKENS = (
    "\\left",
    "\\right",
    "\\displaystyle",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "^{\\circ}",
    "^\\circ",
    "°",
    "\\$",
    "$",
    "\\%",
    "%",
    "\\(",
    "\\)",
    "\\mathbf",
)
_SYNONYMS = (
    ("\\tfrac", "\\frac"),
    ("\\dfrac", "\\frac"),
    ("\\neq", "\\ne"),
    ("\\leq", "\\le"),
    ("\\geq", "\\ge"),
    ("bmatrix", "pmatrix"),
    ("\\emptyset", "\\varnothing"),
    ("\\infinity", "\\infty"),
    ("{,}", ","),
)
_TRAILING_TEXT_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\{[^{}]*\}$")
_TEXT_WRAPPER = re.compile(r"\\(?:text|mbox|mathrm|textbf|mathcal)\{([^{}]*)\}")
_SHORT_LHS = re.compile(r"^[A-Za-z](?:_\{?[0-9A-Za-z]\}?)?\s*=(?!=)")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_SPACED_COMMA = re.compile(r",\s")
_TIGHT_COMMA = re.compile(r",\\!\s*")
_PERCENT_WORD = re.compile(r"(?:percentage|percent|pct)$")
_SQRT_SHORT = re.compile(r"\\sqrt(\w)")
_FRAC_SHORT = re.compile(r"\\frac(?:(\d)(\d)|(\d)(?=\{)|\{([^{}]*)\}(\d))")
_INT_SLASH_INT = re.compile(r"^(-?\d+)/(\d+)$")
_TRAILING_ZEROS = re.compile(r"(\d)\.0+(?!\d)")
# A comma typeset as a digit separator, and Indian grouping written with it (a whole answer).
_TYPESET_COMMA = re.compile(r",\\!\s*|\{,\}")
_INDIAN_GROUPING = re.compile(
    rf"-?\d{{1,2}}(?:(?:{_TYPESET_COMMA.pattern})\d{{2}})+(?:{_TYPESET_COMMA.pattern})\d{{3}}(?:\.\d+)?"
)
# Mixed numbers (whole answers): `3128 1/2` before spaces go, `3\frac{1}{2}` once short fracs are braced.
_MIXED_SLASH = re.compile(r"(-?\d+)\s+(\d+)/(\d+)")
_MIXED_FRAC = re.compile(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_BARE_DECIMAL = re.compile(r"(^|[^\d])\.(\d)")


def _expand_short_frac(match: re.Match) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{x}` -> `\\frac{1}{x}`, `\\frac{x}2` -> `\\frac{x}{2}`."""
    numerator_digit, denominator_digit, lone_numerator, braced_numerator, lone_denominator = match.groups()
    if numerator_digit is not None:
        return f"\\frac{{{numerator_digit}}}{{{denominator_digit}}}"
    if lone_numerator is not None:
        return f"\\frac{{{lone_numerator}}}"
    return f"\\frac{{{braced_numerator}}}{{{lone_denominator}}}"


def _mixed_number_as_fraction(text: str) -> str:
    """`3\\frac{1}{2}` -> `\\frac{7}{2}` (a whole number and a proper fraction); anything else unchanged."""
    mixed = _MIXED_FRAC.fullmatch(text)
    if mixed is None:
        return text
    sign, whole, numerator, denominator = mixed[1], int(mixed[2]), int(mixed[3]), int(mixed[4])
    if not 0 < numerator < denominator:
        return text  # `3\\frac{5}{2}` is no mixed number: leave it to the symbolic reading
    return f"{sign}\\frac{{{whole * denominator + numerator}}}{{{denominator}}}"


def normalize_answer(answer: str) -> str:
    """Canonical string form of a final answer, e.g. `\\$ 0.50\\text{ dollars}.` -> `0.5`.

    Only removes notation; it never evaluates anything. Case is kept (`A` and `a` may differ in
    a math answer).
    """
    text = answer.strip().replace("\n", "")
    if _INDIAN_GROUPING.fullmatch(text):
        text = _TYPESET_COMMA.sub("", text)
    # `32,\! 349`: a comma tightened by `\!` is a thousands separator, whatever space follows.
    text = _TIGHT_COMMA.sub(",", text)
    for old, new in _SYNONYMS:
        text = text.replace(old, new)
    for token in _DROPPED_TOKENS:
        text = text.replace(token, "")
    # A trailing `\text{cm}` is a unit; drop it when a value remains in front of it.
    without_unit = _TRAILING_TEXT_UNIT.sub("", text).strip()
    if without_unit:
        text = without_unit
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = text.strip().rstrip(".").strip()
    # `28 percent` is `28\%`; a trailing `\` (a stray line break) is no part of the value.
    text = _PERCENT_WORD.sub("", text).rstrip().rstrip("\\").strip()
    # `x = 5` answers the question "find x": keep the value. Longer left sides are equations.
    if text.count("=") == 1:
        text = _SHORT_LHS.sub("", text)
    # `32, 349` is a list of two numbers: a comma followed by a space is never a thousands separator.
    spaced_comma = _SPACED_COMMA.search(text) is not None
    text = _MIXED_SLASH.sub(r"\1\\frac{\2}{\3}", text) if _MIXED_SLASH.fullmatch(text) else text
    text = text.replace(" ", "")
    if not spaced_comma and _THOUSANDS.match(text):
        text = text.replace(",", "")
    text = _SQRT_SHORT.sub(r"\\sqrt{\1}", text)
    text = _FRAC_SHORT.sub(_expand_short_frac, text)
    text = _mixed_number_as_fraction(text)
    slash = _INT_SLASH_INT.match(text)
    if slash:
        text = f"\\frac{{{slash.group(1)}}}{{{slash.group(2)}}}"
    text = _BARE_DECIMAL.sub(r"\g<1>0.\2", text)
    text = _TRAILING_ZEROS.sub(r"\1", text)
    return text
