"""The cheap, in-process half of math answer checking.

`prepare_math_item` turns a (response, ground truth) pair into the two final-answer strings, and
`quick_math_verdict` settles the pair when plain string work can: no answer, equal normalised
strings, or two plain numbers (compared with relative tolerance 1e-4, percentages accepted).
Only pairs it leaves open (`None`) need the symbolic check in `symbolic.py`, which runs in worker
processes because sympy can be slow on adversarial input.
"""
from typing import NamedTuple

from gift_jax.rewards.boxed import last_boxed_answer
from gift_jax.rewards.normalize import normalize_answer
from gift_jax.rewards.numeric import numbers_match, parse_number

# Final answers longer or more deeply bracketed than this are only compared as strings: real
# answers are far shorter and shallower, while the LaTeX parser's time grows with length and
# roughly 1.4x per level of nesting (12 nested braces take seconds).
MAX_ANSWER_CHARS = 1000
MAX_NESTING_DEPTH = 10
_OPENING, _CLOSING = frozenset("{(["), frozenset("})]")


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

    Raises ValueError naming `where` when the ground truth is empty or its box is never closed:
    that is a data error, not a wrong answer.
    """
    if "\\boxed" in ground_truth or "\\fbox" in ground_truth:
        boxed = last_boxed_answer(ground_truth)
        if boxed is None:
            raise ValueError(f"{where}: unterminated \\boxed{{...}} in ground truth {ground_truth!r}")
        answer = boxed
    else:
        answer = ground_truth.strip()
    if not answer:
        raise ValueError(f"{where}: empty ground-truth answer {ground_truth!r}")
    return answer


def prepare_math_item(response: str, ground_truth: str, *, where: str = "ground_truth") -> MathItem:
    """Extract the response's last boxed answer and the reference answer of `ground_truth`."""
    return MathItem(last_boxed_answer(response), reference_answer(ground_truth, where=where))


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
    if max(nesting_depth(answer), nesting_depth(reference)) > MAX_NESTING_DEPTH:
        return False
    if not answer_normalized:
        return False
    answer_number = parse_number(answer_normalized)
    reference_number = parse_number(reference_normalized)
    if answer_number is not None and reference_number is not None:
        return numbers_match(answer_number, reference_number)
    return None
