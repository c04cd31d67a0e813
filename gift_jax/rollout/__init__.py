"""Rollouts: KV-cache sampling from the policy with one decode step (`decode_step.py`), scheduled by
the continuous-batching engine or as the static reference (`engine.run_engine`)."""

from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.decode_step import DecodeState, EngineShape
from gift_jax.rollout.engine import EngineStats, RolloutAborted, run_engine
from gift_jax.rollout.plan import DecodePlan, plan_decode, slots_for_budget
from gift_jax.rollout.programs import EnginePrograms, engine_programs
from gift_jax.rollout.token_sampling import TokenChoice, TokenRule, choose_tokens, first_argmax
from gift_jax.rollout.types import SampleResult, SamplingConfig, StopRule

__all__ = [
    "DecodePlan",
    "DecodeState",
    "EnginePrograms",
    "EngineShape",
    "EngineStats",
    "RolloutAborted",
    "SampleResult",
    "SamplingConfig",
    "StopRule",
    "TokenChoice",
    "TokenRule",
    "bucket_size",
    "choose_tokens",
    "engine_programs",
    "first_argmax",
    "plan_decode",
    "run_engine",
    "slots_for_budget",
]
