"""gift_jax.evaluation."""
