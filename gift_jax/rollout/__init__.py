"""Rollouts: batched KV-cache sampling from the policy (see `sampler.py`)."""
from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.sampler import Generation, SampleResult, SamplingConfig, generate, left_pad, sample
from gift_jax.rollout.token_sampling import TokenChoice, TokenRule, choose_tokens, first_argmax

__all__ = [
    "Generation",
    "SampleResult",
    "SamplingConfig",
    "TokenChoice",
    "TokenRule",
    "bucket_size",
    "choose_tokens",
    "first_argmax",
    "generate",
    "left_pad",
    "sample",
]
