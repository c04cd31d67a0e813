"""gift_jax.rl."""
