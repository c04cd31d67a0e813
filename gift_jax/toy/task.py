"""The toy task: add a short list of small numbers, e.g. `7+15+8+3=?` -> `33`.

A problem's identity is its operand tuple. Every problem of a `TaskSpec` has a dense integer id
(`problem_id` / `problem_from_id`), so splits can be drawn as disjoint sets of ids without ever
enumerating the problem space.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

_PROMPT_PATTERN = re.compile(r"^(\d+(?:\+\d+)+)=\?$")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Which addition problems exist.

    Attributes:
      min_operands / max_operands: how many numbers are added (inclusive range, >= 2).
      min_operand / max_operand: the range of each number (inclusive, >= 0).
    """

    min_operands: int = 4
    max_operands: int = 4
    min_operand: int = 1
    max_operand: int = 39

    def __post_init__(self):
        if not 2 <= self.min_operands <= self.max_operands:
            raise ValueError(
                f"TaskSpec: need 2 <= min_operands <= max_operands, got {self.min_operands}..{self.max_operands}"
            )
        if not 0 <= self.min_operand <= self.max_operand:
            raise ValueError(
                f"TaskSpec: need 0 <= min_operand <= max_operand, got {self.min_operand}..{self.max_operand}"
            )

    @property
    def radix(self) -> int:
        """Number of values one operand can take."""
        return self.max_operand - self.min_operand + 1

    @property
    def num_problems(self) -> int:
        """Size of the problem space (all operand tuples of all allowed lengths)."""
        return sum(self.radix**n for n in range(self.min_operands, self.max_operands + 1))


@dataclasses.dataclass(frozen=True)
class Problem:
    """One addition problem; `operands` is its identity (order matters: `3+5` != `5+3`)."""

    operands: tuple[int, ...]

    def __post_init__(self):
        if len(self.operands) < 2 or any(not isinstance(x, (int, np.integer)) or x < 0 for x in self.operands):
            raise ValueError(f"Problem: need >= 2 non-negative int operands, got {self.operands!r}")
        object.__setattr__(self, "operands", tuple(int(x) for x in self.operands))

    @property
    def prompt(self) -> str:
        """The user turn, e.g. `7+15+8+3=?`."""
        return "+".join(str(x) for x in self.operands) + "=?"

    @property
    def answer(self) -> str:
        """Ground truth as the reward compares it: the decimal sum, e.g. `33`."""
        return str(sum(self.operands))

    @classmethod
    def from_prompt(cls, prompt: str) -> Problem:
        """Parses a prompt written by `Problem.prompt`; raises ValueError naming it otherwise."""
        match = _PROMPT_PATTERN.match(prompt.strip())
        if match is None:
            raise ValueError(f"Problem.from_prompt: {prompt!r} is not of the form `a+b+...=?`")
        return cls(tuple(int(x) for x in match.group(1).split("+")))


def problem_from_id(spec: TaskSpec, pid: int) -> Problem:
    """Decodes a dense id in [0, spec.num_problems): shorter tuples first, then mixed radix."""
    if not 0 <= pid < spec.num_problems:
        raise ValueError(f"problem id {pid} outside [0, {spec.num_problems}) for {spec}")
    for n in range(spec.min_operands, spec.max_operands + 1):
        block = spec.radix**n
        if pid < block:
            digits = []
            for _ in range(n):
                pid, digit = divmod(pid, spec.radix)
                digits.append(spec.min_operand + digit)
            return Problem(tuple(reversed(digits)))
        pid -= block
    raise AssertionError("unreachable: pid was range-checked above")


def problem_id(spec: TaskSpec, problem: Problem) -> int:
    """Inverse of `problem_from_id`; raises ValueError if the problem is not in the spec."""
    n = len(problem.operands)
    if not spec.min_operands <= n <= spec.max_operands or not all(
        spec.min_operand <= x <= spec.max_operand for x in problem.operands
    ):
        raise ValueError(f"problem {problem.prompt!r} is not in {spec}")
    offset = sum(spec.radix**m for m in range(spec.min_operands, n))
    pid = 0
    for x in problem.operands:
        pid = pid * spec.radix + (x - spec.min_operand)
    return offset + pid


def sample_problem_ids(spec: TaskSpec, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct problem ids drawn uniformly without replacement. Returns int64 [count]."""
    if count > spec.num_problems:
        raise ValueError(
            f"asked for {count} distinct problems but {spec} has only {spec.num_problems}; "
            "widen the operand range or shrink the split sizes"
        )
    return rng.choice(spec.num_problems, size=count, replace=False).astype(np.int64)
