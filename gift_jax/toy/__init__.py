"""gift_jax.toy."""
