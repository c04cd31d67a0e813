"""Multiple-choice answer checking (GPQA, MMLU-Pro, MMLU-Redux, ARC-Challenge).

The answer is a standalone option letter. Looked for in order of how deliberate it is:
1. the last standalone letter inside the last `\\boxed{...}` (`\\boxed{C}`, `\\boxed{\\text{(C)}}`),
2. the last "answer is (C)" / "answer: C" statement,
3. the last standalone letter anywhere in the response (the paper's rule).
The first two guard the paper's rule against a stray capital after the final answer
("... the answer is (C). A quick check confirms it." ends with the article "A").

Everything is a linear regex scan, cheap enough to run in the trainer process.
"""

import re
from functools import lru_cache

from gift_jax.rewards.boxed import last_boxed_answer

DEFAULT_CHOICES = "ABCDE"


@lru_cache(maxsize=16)
def _letter_patterns(choices: str) -> tuple[re.Pattern, re.Pattern]:
    """(standalone letter, "answer is X" statement) regexes for the option letters `choices`."""
    distinct_capitals = choices.isascii() and choices.isalpha() and choices.isupper()
    if not distinct_capitals or len(set(choices)) != len(choices):
        raise ValueError(f"choices must be distinct capital letters such as 'ABCDE', got {choices!r}")
    letter_class = "[" + re.escape(choices) + "]"
    # Not part of a word, a number or a LaTeX command (`\Delta`, `\mathbb{C}` stays a letter).
    standalone = re.compile(rf"(?<![A-Za-z0-9_\\])({letter_class})(?![A-Za-z0-9_])")
    # Only the words are case-insensitive: "the answer is a bit long" names no option.
    statement = re.compile(rf"(?i:answer\s*(?:is|:)\s*(?:option\s*)?)[(\[{{]?\s*\**\s*({letter_class})(?![A-Za-z0-9_])")
    return standalone, statement


def _last_group(pattern: re.Pattern, text: str) -> str | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007  (keeps the last)
        pass
    return None if last is None else last.group(1)


def extract_choice(response: str, choices: str = DEFAULT_CHOICES) -> str | None:
    """The option letter a response commits to (one of `choices`), or None if it names none."""
    standalone, statement = _letter_patterns(choices)
    boxed = last_boxed_answer(response)
    if boxed:
        letter = _last_group(standalone, boxed)
        if letter is not None:
            return letter
    letter = _last_group(statement, response)
    if letter is not None:
        return letter
    return _last_group(standalone, response)


def reference_choice(ground_truth: str, choices: str = DEFAULT_CHOICES, *, where: str = "ground_truth") -> str:
    """The option letter of a ground truth such as `C`, `(C)` or `\\boxed{C}`.

    Raises ValueError naming `where` when it holds no letter from `choices`.
    """
    letter = extract_choice(ground_truth, choices)
    if letter is None:
        raise ValueError(f"{where}: no option letter from {choices!r} in ground truth {ground_truth!r}")
    return letter


def multiple_choice_reward(response: str, ground_truth: str, *, choices: str = DEFAULT_CHOICES) -> float:
    """1.0 if the response's option letter equals the ground truth's, else 0.0.

    `choices` lists the valid option letters: "ABCDE" as in the paper, "ABCDEFGHIJ" for
    MMLU-Pro's ten options.
    """
    return float(extract_choice(response, choices) == reference_choice(ground_truth, choices))
