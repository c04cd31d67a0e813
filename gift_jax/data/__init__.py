"""gift_jax.data."""
