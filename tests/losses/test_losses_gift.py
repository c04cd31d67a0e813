"""GIFT token loss: float64 parity, gradient, limits, optimum, numerics and memory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gift_jax.losses import gift_token_loss
from tests.losses import losses_reference as ref


def _random_case(seed, n=48, vocab=40, scale=3.0, ref_scale=4.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(n, vocab))).astype(np.float32)
    ref_logits = (ref_scale * rng.normal(size=(n, vocab))).astype(np.float32)
    labels = rng.integers(0, vocab, size=n).astype(np.int32)
    return logits, ref_logits, labels


def _peaked_case(seed, n=32, vocab=40):
    """Reference distributions that are near one-hot on the label, or nearly exclude it."""
    logits, ref_logits, labels = _random_case(seed, n, vocab)
    rows = np.arange(n)
    ref_logits[rows[: n // 2], labels[: n // 2]] += 30.0  # p_ref(y) ~ 1 - 1e-12
    ref_logits[rows[n // 2 :], labels[n // 2 :]] -= 40.0  # p_ref(y) ~ 1e-18: below the floor
    logits[rows[::3], labels[::3]] += 12.0  # policy already confident on some
    return logits, ref_logits, labels


@pytest.mark.parametrize("beta", [0.0, 1.0, 20.0, 1e4])
@pytest.mark.parametrize("smooth_lambda", [0.0, 0.01, 0.3])
@pytest.mark.parametrize("make_case", [_random_case, _peaked_case])
def test_matches_float64_reference_of_official_formula(beta, smooth_lambda, make_case):
    logits, ref_logits, labels = make_case(seed=int(beta) % 7)
    loss = gift_token_loss(logits, ref_logits, labels, beta=beta, smooth_lambda=smooth_lambda)
    expected = ref.gift_loss(logits, ref_logits, labels, beta, smooth_lambda)
    assert loss.dtype == jnp.float32 and loss.shape == labels.shape
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("beta, smooth_lambda", [(0.0, 0.0), (5.0, 0.1), (20.0, 0.0), (1e4, 0.01)])
def test_gradient_is_softmax_minus_target(beta, smooth_lambda):
    logits, ref_logits, labels = _peaked_case(seed=3)
    cotangent = np.random.default_rng(4).uniform(0.5, 2.0, size=labels.shape).astype(np.float32)
    _, vjp = jax.vjp(lambda z: gift_token_loss(z, ref_logits, labels, beta=beta, smooth_lambda=smooth_lambda), logits)
    (grad,) = vjp(cotangent)
    q = ref.gift_target(ref_logits, labels, beta, smooth_lambda)
    expected = cotangent[:, None] * (ref.softmax(logits) - q)
    np.testing.assert_allclose(grad, expected, atol=2e-6)


def test_no_gradient_reaches_the_reference_logits():
    logits, ref_logits, labels = _random_case(seed=5)
    grad = jax.grad(lambda r: gift_token_loss(logits, r, labels, beta=2.0).sum())(ref_logits)
    np.testing.assert_array_equal(grad, 0.0)


def test_large_beta_is_cross_entropy_on_labels():
    logits, ref_logits, labels = _peaked_case(seed=6)
    loss = gift_token_loss(logits, ref_logits, labels, beta=1e4)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(loss, cross_entropy, rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda z: gift_token_loss(z, ref_logits, labels, beta=1e4).sum())(logits)
    np.testing.assert_allclose(grad, ref.softmax(logits) - ref.one_hot(labels, 40), atol=1e-6)


def test_zero_beta_without_smoothing_distils_the_base_model():
    logits, ref_logits, labels = _random_case(seed=7)
    loss = gift_token_loss(logits, ref_logits, labels, beta=0.0)
    distillation = -(ref.softmax(ref_logits) * ref.log_softmax(logits)).sum(-1)
    # Only the 1e-10 floor separates q from p_ref here.
    np.testing.assert_allclose(loss, distillation, rtol=1e-5)


def test_smoothing_equals_gift_against_the_smoothed_reference():
    logits, ref_logits, labels = _random_case(seed=8)
    lam = 0.2
    smoothed = (1 - lam) * ref.softmax(ref_logits) + lam / ref_logits.shape[-1]
    smoothed_logits = np.log(smoothed).astype(np.float32)
    np.testing.assert_allclose(
        gift_token_loss(logits, ref_logits, labels, beta=3.0, smooth_lambda=lam),
        gift_token_loss(logits, smoothed_logits, labels, beta=3.0),
        rtol=2e-5,
    )
    # Full smoothing forgets the base model: the target is uniform tilted towards the label.
    other_ref = np.random.default_rng(9).normal(size=ref_logits.shape).astype(np.float32)
    np.testing.assert_allclose(
        gift_token_loss(logits, ref_logits, labels, beta=3.0, smooth_lambda=1.0),
        gift_token_loss(logits, other_ref, labels, beta=3.0, smooth_lambda=1.0),
        rtol=1e-6,
    )


def test_optimum_keeps_base_log_odds_between_non_target_tokens():
    _, ref_logits, labels = _random_case(seed=10, n=4, vocab=8, ref_scale=1.0)
    beta = 3.0
    loss_grad = jax.grad(lambda z: gift_token_loss(z, ref_logits, labels, beta=beta).sum())
    logits = jax.lax.fori_loop(0, 3000, lambda _, z: z - loss_grad(z), jnp.zeros_like(ref_logits))
    np.testing.assert_allclose(loss_grad(logits), 0.0, atol=1e-5)
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    base_log_probs = ref.log_softmax(ref_logits)
    for row, label in enumerate(labels):
        others = np.delete(np.arange(8), label)
        np.testing.assert_allclose(
            log_probs[row, others] - log_probs[row, others[0]],
            base_log_probs[row, others] - base_log_probs[row, others[0]],
            atol=1e-4,
        )
        # The label's log-odds are lifted by exactly beta: finite logits, no collapse to one-hot.
        np.testing.assert_allclose(
            log_probs[row, label] - log_probs[row, others[0]],
            base_log_probs[row, label] - base_log_probs[row, others[0]] + beta,
            atol=1e-4,
        )


def test_extreme_inputs_stay_finite():
    logits, ref_logits, labels = _random_case(seed=11)
    logits = logits * 300.0  # logits spread over thousands of nats
    ref_logits = ref_logits * 300.0
    for beta in (0.0, 20.0, 1e4):
        loss, grad = jax.value_and_grad(lambda z: gift_token_loss(z, ref_logits, labels, beta=beta).sum())(logits)  # noqa: B023
        assert np.isfinite(loss) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(loss, ref.gift_loss(logits, ref_logits, labels, beta).sum(), rtol=1e-4)


def test_bfloat16_logits_give_bfloat16_gradients():
    logits, ref_logits, labels = _random_case(seed=12)
    z16, r16 = jnp.asarray(logits, jnp.bfloat16), jnp.asarray(ref_logits, jnp.bfloat16)
    grad = jax.grad(lambda z: gift_token_loss(z, r16, labels, beta=20.0).sum())(z16)
    assert grad.dtype == jnp.bfloat16
    expected = ref.gift_loss(np.asarray(z16, np.float32), np.asarray(r16, np.float32), labels, 20.0)
    np.testing.assert_allclose(gift_token_loss(z16, r16, labels, beta=20.0), expected, rtol=1e-4)


def test_batched_leading_axes():
    logits, ref_logits, labels = _random_case(seed=13, n=24)
    flat = gift_token_loss(logits, ref_logits, labels, beta=4.0)
    batched = gift_token_loss(
        logits.reshape(2, 3, 4, -1), ref_logits.reshape(2, 3, 4, -1), labels.reshape(2, 3, 4), beta=4.0
    )
    np.testing.assert_array_equal(batched.reshape(-1), flat)


def test_shape_errors_name_the_tensor():
    logits, ref_logits, labels = _random_case(seed=14)
    with pytest.raises(ValueError, match="labels must have shape"):
        gift_token_loss(logits, ref_logits, labels[:-1], beta=1.0)
    with pytest.raises(ValueError, match="ref_logits must have"):
        gift_token_loss(logits, ref_logits[:, :-1], labels, beta=1.0)
    with pytest.raises(ValueError, match="integer token ids"):
        gift_token_loss(logits, ref_logits, labels.astype(np.float32), beta=1.0)


def _grad_temp_bytes(loss_fn, *shapes):
    compiled = jax.jit(jax.grad(loss_fn)).lower(*shapes).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_gradient_memory_is_that_of_cross_entropy():
    """At N=2048, V=32768: at most a quarter of one [N, V] float32 buffer above optax CE."""
    n, vocab = 2048, 32768
    logits = jax.ShapeDtypeStruct((n, vocab), jnp.float32)
    labels = jax.ShapeDtypeStruct((n,), jnp.int32)
    gift = _grad_temp_bytes(lambda z, r, y: gift_token_loss(z, r, y, beta=20.0).mean(), logits, logits, labels)
    cross_entropy = _grad_temp_bytes(
        lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean(), logits, labels
    )
    assert gift - cross_entropy <= n * vocab * 4 / 4, (gift, cross_entropy)
