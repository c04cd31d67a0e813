"""Answers made of several values: lists, sets and tuples, and answers split over several boxes.

The reference's notation says how a several-valued answer is compared:
- a set `\\{a, b\\}` or a bare list `a, b` (the "all solutions" form) is unordered;
- a tuple `(a, b)` or a bracketed list `[a, b]` is ordered.
An answer split over several boxes (`\\boxed{1}, \\boxed{2}`) is written in the reference's
notation before comparison (`join_boxes`). Lists of plain numbers are compared here, element by
element with the exact rule of `numeric.py`, so a near-miss inside a list is not rescued by a
looser checker; other lists go to the symbolic check. Plain string work, linear in the length.
"""

from fractions import Fraction
from typing import NamedTuple

from gift_jax.rewards.numeric import numbers_match, parse_number, written_places

_PAIRS = {"(": ")", "[": "]", "{": "}"}


def split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside every bracket: `(1,2),(3,4)` -> [`(1,2)`, `(3,4)`]."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def _encloses(text: str, opening: str, closing: str) -> bool:
    """Whether `text` is `opening ... closing` with the first bracket closed only at the end."""
    if not (text.startswith(opening) and text.endswith(closing)) or len(text) < 2:
        return False
    depth = 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0 and index < len(text) - 1:
                return False
    return depth == 0


def notation(text: str) -> tuple[str, str, str]:
    """(kind, opening, closing) of a normalised answer: set, tuple, bracket or bare list.

    kind is "set", "tuple", "bracket" or "list"; opening / closing are its delimiters ("" for a
    bare list). A bare answer with no top-level comma is a one-element list.
    """
    if _encloses(text, "\\{", "\\}"):
        return "set", "\\{", "\\}"
    for opening, kind in (("(", "tuple"), ("[", "bracket")):
        if _encloses(text, opening, _PAIRS[opening]) and len(split_top_level(text[1:-1])) > 1:
            return kind, opening, _PAIRS[opening]
    return "list", "", ""


def join_boxes(boxes: list[str], reference_kind: str) -> str:
    """One answer string from the boxes of a split answer, in the reference's notation."""
    body = ", ".join(boxes)
    if len(boxes) == 1:
        return body
    if reference_kind == "set":
        return "\\{" + body + "\\}"
    if reference_kind == "tuple":
        return "(" + body + ")"
    return body


class NumberList(NamedTuple):
    """The plain numbers of a normalised several-valued answer, with their written precision."""

    kind: str
    values: list[Fraction]
    places: list[int | None]


def number_list(text: str) -> NumberList | None:
    """The plain numbers of `text` (a set, tuple, bracketed or bare list), or None.

    None when an element is not a plain number. A bare single number is a one-element list.
    """
    kind, opening, closing = notation(text)
    inner = text[len(opening) : len(text) - len(closing)]
    elements = split_top_level(inner)
    values = [parse_number(element) for element in elements]
    if any(value is None for value in values):
        return None
    return NumberList(kind, values, [written_places(element) for element in elements])


def _elements_match(answer: NumberList, i: int, reference: NumberList, j: int) -> bool:
    return numbers_match(
        answer.values[i],
        reference.values[j],
        answer_places=answer.places[i],
        reference_places=reference.places[j],
        accept_percent=False,
    )


def number_lists_verdict(answer: NumberList, reference: NumberList) -> bool | None:
    """Compare two lists of plain numbers of which at least one has several values.

    False when one is a single number and the other several (`32, 349` is not `32349`); None
    when the notations do not say how to compare (a tuple answer to a set reference).
    """
    if len(answer.values) != len(reference.values):
        return False
    # A bare answer may stand for a tuple (math-verify reads `1, 2` for `(1, 2)` too), but not
    # for a bracketed reference, which may be an interval.
    allowed = {"tuple": ("tuple", "list"), "bracket": ("bracket",)}.get(reference.kind)
    if allowed is not None:
        if answer.kind not in allowed:
            return None
        return all(_elements_match(answer, i, reference, i) for i in range(len(answer.values)))
    if answer.kind not in ("set", "list"):
        return None
    unused = list(range(len(answer.values)))
    for j in range(len(reference.values)):
        match = next((i for i in unused if _elements_match(answer, i, reference, j)), None)
        if match is None:
            return False
        unused.remove(match)
    return True
