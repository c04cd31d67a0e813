"""gift_jax.train."""
