"""gift_jax.losses."""
