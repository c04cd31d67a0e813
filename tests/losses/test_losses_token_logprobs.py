"""chunked_token_logprobs: values, temperature, gradients and the entropy's gradient switch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.losses import chunked_token_logprobs
from tests.losses import losses_reference as ref

B, T, D, V = 2, 9, 8, 30


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(B, T, D)).astype(np.float32),
        rng.normal(size=(D, V)).astype(np.float32),
        rng.integers(0, V, size=(B, T)).astype(np.int32),
    )


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_values_match_float64(inputs, temperature):
    hidden, w_out, labels = inputs
    logprobs, entropy = chunked_token_logprobs(hidden, w_out, labels, chunk_size=4, temperature=temperature)
    logits = np.einsum("btd,dv->btv", hidden.astype(np.float64), w_out) / temperature
    np.testing.assert_allclose(logprobs, ref.label_log_prob(logits, labels), rtol=1e-5)
    # Entropies of peaked rows are ~1e-2 nats: float32 rounding of the logits alone is ~1e-5 of that.
    np.testing.assert_allclose(entropy, ref.entropy(logits), rtol=1e-4)


def _direct(hidden, w_out, labels, temperature):
    log_probs = jax.nn.log_softmax(jnp.einsum("btd,dv->btv", hidden, w_out) / temperature)
    return (jnp.take_along_axis(log_probs, labels[..., None], -1)[..., 0], -jnp.sum(jnp.exp(log_probs) * log_probs, -1))


def test_logprob_gradients_match_unchunked_autodiff(inputs):
    hidden, w_out, labels = inputs
    weights = np.random.default_rng(1).normal(size=(B, T)).astype(np.float32)

    def objective(fn):
        return jax.jit(jax.grad(lambda h, w: jnp.sum(weights * fn(h, w)[0]), argnums=(0, 1)))

    grads = objective(lambda h, w: chunked_token_logprobs(h, w, labels, chunk_size=4, temperature=0.7))(hidden, w_out)
    expected = objective(lambda h, w: _direct(h, w, labels, 0.7))(hidden, w_out)
    for grad, want in zip(grads, expected):
        np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def test_entropy_gradient_is_opt_in(inputs):
    hidden, w_out, labels = inputs

    def entropy_grad(fn):
        return jax.jit(jax.grad(lambda w: jnp.sum(fn(w)[1])))(w_out)

    stopped = entropy_grad(lambda w: chunked_token_logprobs(hidden, w, labels, chunk_size=4))
    np.testing.assert_array_equal(stopped, 0.0)
    live = entropy_grad(lambda w: chunked_token_logprobs(hidden, w, labels, chunk_size=4, entropy_gradient=True))
    expected = entropy_grad(lambda w: _direct(hidden, w, labels, 1.0))
    np.testing.assert_allclose(live, expected, rtol=1e-4, atol=1e-6)


def test_out_of_range_ids_read_as_token_zero(inputs):
    hidden, w_out, labels = inputs
    padded = labels.copy()
    padded[:, -3:] = -100
    padded[0, 0] = V
    zeroed = np.where((padded < 0) | (padded >= V), 0, padded)
    for got, want in zip(chunked_token_logprobs(hidden, w_out, padded), chunked_token_logprobs(hidden, w_out, zeroed)):
        np.testing.assert_array_equal(got, want)


def test_input_errors(inputs):
    hidden, w_out, labels = inputs
    with pytest.raises(ValueError, match="temperature must be > 0"):
        chunked_token_logprobs(hidden, w_out, labels, temperature=0.0)
    with pytest.raises(ValueError, match=r"labels must be int \[B, T\]"):
        chunked_token_logprobs(hidden, w_out, labels[:, :-1])
