"""Rollouts: KV-cache sampling from the policy, as one static batch (`sampler.py`) or on the
continuous-batching engine (`engine.py`)."""

from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.engine import (
    EngineShape,
    EngineStats,
    RolloutAborted,
    abstract_decode_inputs,
    run_engine,
    sample_continuous,
    slots_for_budget,
)
from gift_jax.rollout.sampler import Generation, SampleResult, SamplingConfig, generate, left_pad, sample, sample_static
from gift_jax.rollout.token_sampling import TokenChoice, TokenRule, choose_tokens, first_argmax

__all__ = [
    "EngineShape",
    "EngineStats",
    "Generation",
    "SampleResult",
    "RolloutAborted",
    "SamplingConfig",
    "TokenChoice",
    "TokenRule",
    "abstract_decode_inputs",
    "bucket_size",
    "choose_tokens",
    "first_argmax",
    "generate",
    "left_pad",
    "run_engine",
    "sample",
    "sample_continuous",
    "sample_static",
    "slots_for_budget",
]
