"""Checking a response against a problem, the way the project's math reward does.

The reward reads the content of the LAST `\\boxed{...}` (with brace matching) and compares it to
the ground truth, first as a normalised string, then numerically. Toy answers are integers, so
both comparisons reduce to the numeric one below; a response without a closed `\\boxed{}` scores 0
even if it ends in the plain `answer: 33` format.
"""
from __future__ import annotations

import math

from gift_jax.toy.task import Problem

_BOXED_OPEN = "\\boxed{"


def last_boxed_content(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in `text`, braces matched; None if absent or unclosed."""
    start = text.rfind(_BOXED_OPEN)
    if start < 0:
        return None
    depth, begin = 1, start + len(_BOXED_OPEN)
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
    return None


def _same_number(content: str, answer: str) -> bool:
    try:
        value = float(content)
    except ValueError:
        return False
    return math.isfinite(value) and value == float(answer)


def verify(problem: Problem | str, response: str) -> float:
    """1.0 if the last boxed answer in `response` equals the problem's sum, else 0.0.

    Args:
      problem: a `Problem`, or its prompt text (`7+15+8+3=?`).
      response: the generated assistant text (special tokens already stripped).
    """
    if isinstance(problem, str):
        problem = Problem.from_prompt(problem)
    content = last_boxed_content(response)
    if content is None:
        return 0.0
    content = content.strip()
    return 1.0 if content == problem.answer or _same_number(content, problem.answer) else 0.0
