"""Ground truths checked when data is read, so a malformed one stops a run before it starts.

A math ground truth is accepted when the reward can read a reference from it (`reference_answer`:
not empty, no unterminated `\\boxed{`) and its unescaped braces balance (`\\frac{1}{2` is a typo
that no answer could be compared with). A multiple-choice ground truth must name one of the
option letters. Readers call `check_ground_truth` per row and add the file and row to the error.
Light: no sympy, no workers.
"""

from gift_jax.rewards.math_answer import reference_answer
from gift_jax.rewards.multiple_choice import DEFAULT_CHOICES, reference_choice


def _unbalanced_brace(text: str) -> str | None:
    """A description of the first unbalanced unescaped brace in `text`, or None."""
    depth, index = 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # `\{`, `\}` and any other escaped character
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                return f"'}}' at character {index} closes nothing"
        index += 1
    return f"{depth} '{{' never closed" if depth > 0 else None


def check_ground_truth(
    ground_truth: str,
    *,
    kind: str = "math",
    choices: str = DEFAULT_CHOICES,
    where: str = "ground_truth",
) -> None:
    """Raise ValueError naming `where` when `ground_truth` cannot be scored as `kind`.

    kind: "math" or "multiple_choice" (as in `RewardScorer.score`); `choices` are the option
    letters for multiple choice.
    """
    if kind == "multiple_choice":
        reference_choice(ground_truth, choices, where=where)
        return
    if kind != "math":
        raise ValueError(f"{where}: unknown ground-truth kind {kind!r}; expected 'math' or 'multiple_choice'")
    reference_answer(ground_truth, where=where)
    problem = _unbalanced_brace(ground_truth)
    if problem is not None:
        raise ValueError(f"{where}: unbalanced braces in ground truth {ground_truth!r} ({problem})")
