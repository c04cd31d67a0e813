"""gift_jax.parallel."""
