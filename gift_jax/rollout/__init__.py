"""gift_jax.rollout."""
