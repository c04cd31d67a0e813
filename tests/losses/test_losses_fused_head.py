"""The fused-gradient head loss equals plain autodiff through the chunked logits, for any token loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.losses import gift_token_loss, map_logit_chunks, sft_token_loss
from gift_jax.losses.fused_head import fused_head_loss


def _inputs(seed=0, batch=2, length=7, d=6, vocab=13):
    keys = jax.random.split(jax.random.key(seed), 5)
    hidden = jax.random.normal(keys[0], (batch, length, d))
    w_out = jax.random.normal(keys[1], (d, vocab))
    ref_hidden = jax.random.normal(keys[2], (batch, length, d))
    ref_w_out = jax.random.normal(keys[3], (d, vocab))
    labels = jax.random.randint(keys[4], (batch, length), 0, vocab)
    weights = jnp.asarray(np.random.default_rng(seed).choice([0.0, 0.5, 1.0, 2.0], (batch, length)), jnp.float32)
    return hidden, w_out, ref_hidden, ref_w_out, labels, weights


def _gift(logits, ref_logits, labels):
    return gift_token_loss(logits, ref_logits, labels, beta=3.0), {"mean_logit": logits.mean(-1)}


def _sft(logits, _, labels):
    return sft_token_loss(logits, labels), {"mean_logit": logits.mean(-1)}


@pytest.mark.parametrize("token_fn, with_ref", [(_gift, True), (_sft, False)])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
def test_fused_gradient_equals_autodiff_through_chunked_logits(token_fn, with_ref, chunk_size):
    hidden, w_out, ref_hidden, ref_w_out, labels, weights = _inputs()
    ref = dict(ref_hidden=ref_hidden, ref_w_out=ref_w_out) if with_ref else {}

    def fused(h, w):
        loss_sum, aux = fused_head_loss(token_fn, h, w, weights, labels, chunk_size=chunk_size, **ref)
        return 3.0 * loss_sum, aux  # a cotangent other than 1 must scale the stored gradient

    def plain(h, w):
        losses, aux = map_logit_chunks(token_fn, h, w, labels, chunk_size=chunk_size, **ref)
        return 3.0 * jnp.sum(weights * losses), aux

    (got, got_aux), got_grads = jax.jit(jax.value_and_grad(fused, (0, 1), has_aux=True))(hidden, w_out)
    (want, want_aux), want_grads = jax.value_and_grad(plain, (0, 1), has_aux=True)(hidden, w_out)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_aux["mean_logit"], want_aux["mean_logit"], rtol=1e-6, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # Without differentiation only the forward runs, with the same value.
    np.testing.assert_allclose(jax.jit(fused)(hidden, w_out)[0], want, rtol=1e-6)


def test_non_finite_losses_at_zero_weight_positions_do_not_reach_the_gradient():
    hidden, w_out, _, _, labels, weights = _inputs(seed=1)

    def poisoned(logits, _, chunk_labels):  # NaN wherever the label is even
        loss = sft_token_loss(logits, chunk_labels)
        return jnp.where(chunk_labels % 2 == 0, jnp.nan, loss), {}

    zeroed = jnp.where(labels % 2 == 0, 0.0, weights)
    loss_sum, grads = jax.value_and_grad(
        lambda h, w: fused_head_loss(poisoned, h, w, zeroed, labels, chunk_size=4)[0], (0, 1)
    )(hidden, w_out)
    assert np.isfinite(loss_sum) and all(np.isfinite(g).all() for g in grads)


def test_fused_head_loss_names_bad_shapes():
    hidden, w_out, _, _, labels, weights = _inputs()
    with pytest.raises(ValueError, match=r"weights must be \[B, T\]"):
        fused_head_loss(_sft, hidden, w_out, weights[:, :3], labels, chunk_size=4)
    with pytest.raises(ValueError, match="output projection"):
        fused_head_loss(_sft, hidden, w_out.T, weights, labels, chunk_size=4)
