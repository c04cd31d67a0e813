"""Scoring a toy response: the project's math reward against the problem's sum.

Delegating to `gift_jax.rewards.math_reward` keeps the toy diagnostics and the RL reward the same
function: the content of the LAST `\\boxed{...}` is compared to the ground truth, and a response
that ends in the plain `answer: 33` format scores 0. Integer answers are settled in-process.
"""

from __future__ import annotations

from gift_jax.rewards import math_reward
from gift_jax.toy.task import Problem


def verify(problem: Problem | str, response: str) -> float:
    """1.0 if the last boxed answer in `response` equals the problem's sum, else 0.0.

    Args:
      problem: a `Problem`, or its prompt text (`7+15+8+3=?`).
      response: the generated assistant text (special tokens already stripped).
    """
    if isinstance(problem, str):
        problem = Problem.from_prompt(problem)
    return math_reward(response, problem.answer)
