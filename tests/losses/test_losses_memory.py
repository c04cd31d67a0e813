"""Memory of the chunked losses, measured on the compiled XLA program (lowered and compiled only:
no large array is ever allocated)."""

import jax
import jax.numpy as jnp

from gift_jax.losses import compute_init_loss, gift_loss_from_hidden

D, V = 256, 32768


def _temp_bytes(fn, *shapes):
    return jax.jit(fn).lower(*shapes).compile().memory_analysis().temp_size_in_bytes


def _fused_gift_grad_temp(tokens):
    hidden = jax.ShapeDtypeStruct((1, tokens, D), jnp.float32)
    w_out = jax.ShapeDtypeStruct((D, V), jnp.float32)
    labels = jax.ShapeDtypeStruct((1, tokens), jnp.int32)
    mask = jax.ShapeDtypeStruct((1, tokens), jnp.float32)
    loss = lambda h, w, rh, rw, y, m: gift_loss_from_hidden(h, w, rh, rw, y, m, beta=20.0)
    return _temp_bytes(jax.grad(loss, argnums=(0, 1)), hidden, w_out, hidden, w_out, labels, mask)


def test_fused_gift_gradient_memory_is_bounded_and_flat_in_sequence_length():
    """d=256, V=32768: under a quarter of one [8192, V] float32 buffer at 8192 tokens, and at
    most 1.5x the 2048-token figure."""
    short, long = _fused_gift_grad_temp(2048), _fused_gift_grad_temp(8192)
    assert long < 8192 * V * 4 / 4, long
    assert long <= 1.5 * short, (short, long)


def test_training_call_with_metrics_stays_within_the_same_bound():
    """The trainer's call: value_and_grad of loss_sum with the metrics as aux."""
    tokens = 8192
    hidden = jax.ShapeDtypeStruct((1, tokens, D), jnp.float32)
    w_out = jax.ShapeDtypeStruct((D, V), jnp.float32)
    labels = jax.ShapeDtypeStruct((1, tokens), jnp.int32)
    mask = jax.ShapeDtypeStruct((1, tokens), jnp.float32)

    def loss(h, w, rh, rw, y, m):
        out = compute_init_loss("gift", h, w, y, m, ref_hidden=rh, ref_w_out=rw)
        return out.loss_sum, out

    step = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    assert _temp_bytes(step, hidden, w_out, hidden, w_out, labels, mask) < tokens * V * 4 / 4
