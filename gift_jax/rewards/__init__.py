"""gift_jax.rewards."""
