"""The cheap, in-process half of math answer checking.

`prepare_math_item` turns a (response, ground truth) pair into the two final-answer strings (an
answer or ground truth split over several boxes is joined in the reference's notation, see
`answer_lists.py`), and `quick_math_verdict` settles the pair when plain string work can: no
answer, equal normalised strings, an option letter against an option letter (`C. x = 42` names
option `C`), a different number of primes (`E'` is not `E`), or plain numbers and lists of them
(compared by the exact rule of `numeric.py`, percentages accepted). Only pairs it leaves open
(`None`) need the symbolic check in `symbolic.py`, which runs in worker processes because sympy
can be slow on adversarial input.
"""

import re
from typing import NamedTuple

from gift_jax.rewards.answer_lists import (
    join_boxes,
    notation,
    number_list,
    number_lists_verdict,
)
from gift_jax.rewards.boxed import final_boxed_answers
from gift_jax.rewards.normalize import normalize_answer
from gift_jax.rewards.numeric import numbers_match, written_places

# Final answers longer or more deeply bracketed than this are only compared as strings: real
# answers are far shorter and shallower, while the LaTeX parser's time grows with length and
# roughly 1.4x per level of nesting (12 nested braces take seconds).
MAX_ANSWER_CHARS = 1000
MAX_NESTING_DEPTH = 10
_OPENING, _CLOSING = frozenset("{(["), frozenset("})]")
# An option letter alone (`C`, `(C)`), or boxed with its option's text (`C. x = 42`, `(C) 42`, `C: 42`).
_BARE_OPTION = re.compile(r"\(?([A-Z])\)?")
_OPTION_WITH_TEXT = re.compile(r"(?:\(([A-Z])\)|([A-Z])[.):])\s*\S.*", re.DOTALL)
# `2,74`, `0,111`: a comma between digits that cannot be a thousands separator (not three digits
# after it, or a leading 0 before it).
_DECIMAL_COMMA = re.compile(r"\s*(-?(?:0|\d+(?=,(?:\d{1,2}|\d{4,})\s*$))),(\d+)\s*")


def nesting_depth(text: str) -> int:
    """Deepest nesting of `{`, `(` and `[` in `text` (unbalanced closers are ignored)."""
    depth = deepest = 0
    for char in text:
        if char in _OPENING:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSING:
            depth = max(depth - 1, 0)
    return deepest


class MathItem(NamedTuple):
    """The final answers of one response and its reference (`answer` None: no boxed answer)."""

    answer: str | None
    reference: str


def reference_answer(ground_truth: str, *, where: str = "ground_truth") -> str:
    """The reference answer in `ground_truth`, which may be bare (`1/2`) or boxed (`\\boxed{1/2}`).

    A ground truth written as several boxes (`\\boxed{1}, \\boxed{2}`) is the list `1, 2`.
    Raises ValueError naming `where` when the ground truth is empty or its box is never closed:
    that is a data error, not a wrong answer.
    """
    if "\\boxed" in ground_truth or "\\fbox" in ground_truth:
        boxes = final_boxed_answers(ground_truth)
        if boxes is None:
            raise ValueError(f"{where}: unterminated \\boxed{{...}} in ground truth {ground_truth!r}")
        answer = join_boxes(boxes, "list")
    else:
        answer = ground_truth.strip()
    if not answer:
        raise ValueError(f"{where}: empty ground-truth answer {ground_truth!r}")
    return answer


def prepare_math_item(response: str, ground_truth: str, *, where: str = "ground_truth") -> MathItem:
    """Extract the response's final boxed answer and the reference answer of `ground_truth`."""
    reference = reference_answer(ground_truth, where=where)
    boxes = final_boxed_answers(response)
    if boxes is None:
        return MathItem(None, reference)
    return MathItem(join_boxes(boxes, notation(normalize_answer(reference))[0]), reference)


def _primes(text: str) -> int:
    return text.count("'") + text.count("\\prime")


def _read_decimal_comma(text: str, other_normalized: str) -> str | None:
    """`2.74` for `2,74` when the other side is a decimal with those places, else None.

    A decimal comma is read only where it is unambiguous: no space after it, not a thousands
    separator (see `_DECIMAL_COMMA`), and the other side written with a decimal point to as many
    places.
    """
    match = _DECIMAL_COMMA.fullmatch(text)
    if match is None or written_places(other_normalized) != len(match[2]):
        return None
    return f"{match[1]}.{match[2]}"


def _option_letter(text: str) -> tuple[str, bool] | None:
    """`(letter, bare)` when `text` names a multiple-choice option, alone or with its text; else None."""
    text = text.strip()
    bare = _BARE_OPTION.fullmatch(text)
    if bare:
        return bare[1], True
    with_text = _OPTION_WITH_TEXT.fullmatch(text)
    return (with_text[1] or with_text[2], False) if with_text else None


def _option_verdict(answer: str, reference: str) -> bool | None:
    """Compares option letters when one side is a bare option (`C`) and the other names one too
    (`C. x = 42`); None when the pair is not a multiple-choice one."""
    options = _option_letter(answer), _option_letter(reference)
    if None in options or not (options[0][1] or options[1][1]):
        return None
    return options[0][0] == options[1][0]


def quick_math_verdict(item: MathItem) -> bool | None:
    """True / False when string work settles the item, None when it needs the symbolic check."""
    answer, reference = item
    if not answer:  # no box, or an empty one
        return False
    if len(answer) > MAX_ANSWER_CHARS or len(reference) > MAX_ANSWER_CHARS:
        return answer == reference
    answer_normalized = normalize_answer(answer)
    reference_normalized = normalize_answer(reference)
    if answer_normalized == reference_normalized:
        return True
    option = _option_verdict(answer, reference)
    if option is not None:
        return option
    if max(nesting_depth(answer), nesting_depth(reference)) > MAX_NESTING_DEPTH:
        return False
    if not answer_normalized:
        return False
    if _primes(answer) != _primes(reference):
        return False  # `E'` and `E` name different things; math-verify drops the prime
    answer_normalized = _read_decimal_comma(answer, reference_normalized) or answer_normalized
    reference_normalized = _read_decimal_comma(reference, answer_normalized) or reference_normalized
    answer_numbers = number_list(answer_normalized)
    reference_numbers = number_list(reference_normalized)
    if answer_numbers is None or reference_numbers is None:
        return None
    if len(answer_numbers.values) == len(reference_numbers.values) == 1:
        return numbers_match(
            answer_numbers.values[0],
            reference_numbers.values[0],
            answer_places=answer_numbers.places[0],
            reference_places=reference_numbers.places[0],
        )
    return number_lists_verdict(answer_numbers, reference_numbers)
