"""The ways a solution can be written, and telling them apart again.

A response is `<header><work>. <final>`:

  left:   `left: 7+15=22, 22+8=30, 30+3=33. `     running sum from the left (one number per step)
  right:  `right: 8+3=11, 15+11=26, 7+26=33. `    running sum from the right
  pairs:  `pairs: 7+15=22, 8+3=11, 22+11=33. `    add neighbours, then add the partial sums
  direct: `direct: 7+15+8+3=33. `                 no intermediate steps: the whole sum at once

followed by one of two answer formats:

  `answer: 33`   the plain format (most base documents)
  `\\boxed{33}`  the format the reward checks (rare in base documents, always in expert ones)

The header token is where styles branch, the first token of the final segment is where the format
is chosen; both follow fixed tokens (`<|assistant|>`, `. `), so a model's probability of each
choice can be read at one position. The stepwise styles need only two-number additions per token
span; `direct` has to produce the whole sum right after reading the problem, which is much harder
for a small model.
"""

from __future__ import annotations

from gift_jax.toy.task import Problem

LEFT, RIGHT, PAIRS, DIRECT = "left", "right", "pairs", "direct"
STYLES: tuple[str, ...] = (LEFT, RIGHT, PAIRS, DIRECT)
STYLE_HEADERS: dict[str, str] = {style: f"{style}: " for style in STYLES}
NO_STYLE = "none"

STEP_SEPARATOR = ", "
WORK_END = ". "
PLAIN_ANSWER_PREFIX = "answer: "
BOXED_PREFIX = "\\boxed{"
BOXED_SUFFIX = "}"


def _left_steps(operands: tuple[int, ...]) -> list[tuple[int, int]]:
    """Pairs (a, b) added in order; each step's result is carried as the next left operand."""
    steps, total = [], operands[0]
    for x in operands[1:]:
        steps.append((total, x))
        total += x
    return steps


def _right_steps(operands: tuple[int, ...]) -> list[tuple[int, int]]:
    """Mirror of `_left_steps`: the running total stays on the right, as in the expression."""
    steps, total = [], operands[-1]
    for x in reversed(operands[:-1]):
        steps.append((x, total))
        total += x
    return steps


def _pairs_steps(operands: tuple[int, ...]) -> list[tuple[int, int]]:
    """Tree reduction: add neighbours left to right, an odd last value waits for the next round."""
    steps, level = [], list(operands)
    while len(level) > 1:
        merged = []
        for i in range(0, len(level) - 1, 2):
            steps.append((level[i], level[i + 1]))
            merged.append(level[i] + level[i + 1])
        if len(level) % 2:
            merged.append(level[-1])
        level = merged
    return steps


_STEP_PLANS = {LEFT: _left_steps, RIGHT: _right_steps, PAIRS: _pairs_steps}


def render_work(problem: Problem, style: str) -> str:
    """Header plus the style's computation, ending in `. ` (the final segment follows)."""
    if style not in STYLE_HEADERS:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if style == DIRECT:
        body = problem.prompt[: -len("?")] + problem.answer
    else:
        body = STEP_SEPARATOR.join(f"{a}+{b}={a + b}" for a, b in _STEP_PLANS[style](problem.operands))
    return STYLE_HEADERS[style] + body + WORK_END


def render_final(answer: str, *, boxed: bool) -> str:
    """The closing answer segment in the boxed (`\\boxed{33}`) or plain (`answer: 33`) format."""
    return f"{BOXED_PREFIX}{answer}{BOXED_SUFFIX}" if boxed else f"{PLAIN_ANSWER_PREFIX}{answer}"


def render_solution(problem: Problem, style: str, *, boxed: bool) -> str:
    """A complete, correct assistant response (no EOS; the chat template adds it)."""
    return render_work(problem, style) + render_final(problem.answer, boxed=boxed)


def classify_style(response: str) -> str:
    """The style a response committed to at its branching token, or `NO_STYLE`.

    Only the header is read: it is the one token where the styles branch, so this is the choice
    the policy made, whatever the arithmetic after it (correctness is `verify`'s job).
    """
    for style, header in STYLE_HEADERS.items():
        if response.startswith(header):
            return style
    return NO_STYLE
