"""gift_jax: GIFT initialization and on-policy RL for language models in JAX / Flax NNX."""

__version__ = "0.1.0"
