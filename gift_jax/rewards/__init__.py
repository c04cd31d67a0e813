"""Answer checking for rewards and evaluation: math (the final `\\boxed{}` answer) and multiple choice.

Model text is never executed, and every check is bounded in time: the symbolic math check runs
in killable worker processes (see `scorer.py`, `worker_pool.py`). Importing this package is
light (no JAX, no sympy) so that workers start fast and trainers do not pay for sympy.
"""

from gift_jax.rewards.boxed import final_boxed_answers, last_boxed_answer
from gift_jax.rewards.ground_truth import check_ground_truth
from gift_jax.rewards.multiple_choice import extract_choice, multiple_choice_reward
from gift_jax.rewards.results import CORRECT_THRESHOLD, BatchScores, ItemStatus, is_correct
from gift_jax.rewards.scorer import KINDS, RewardScorer, math_reward, score_batch

__all__ = [
    "CORRECT_THRESHOLD",
    "KINDS",
    "BatchScores",
    "ItemStatus",
    "RewardScorer",
    "check_ground_truth",
    "extract_choice",
    "final_boxed_answers",
    "is_correct",
    "last_boxed_answer",
    "math_reward",
    "multiple_choice_reward",
    "score_batch",
]
