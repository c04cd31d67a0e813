"""SFT-family baselines against hand-written float64 formulas (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gift_jax.losses import (
    asft_token_loss,
    dft_token_loss,
    psft_token_loss,
    sft_entropy_token_loss,
    sft_token_loss,
)
from tests.losses import losses_reference as ref

N, V = 32, 20


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    logits = (2.0 * rng.normal(size=(N, V))).astype(np.float32)
    ref_logits = (2.0 * rng.normal(size=(N, V))).astype(np.float32)
    labels = rng.integers(0, V, size=N).astype(np.int32)
    return logits, ref_logits, labels


def _grad(loss_fn, logits):
    return np.asarray(jax.jit(jax.grad(lambda z: loss_fn(z).sum()))(logits))


def test_sft_is_cross_entropy(case):
    logits, _, labels = case
    np.testing.assert_allclose(sft_token_loss(logits, labels), -ref.label_log_prob(logits, labels), rtol=1e-5)
    np.testing.assert_allclose(
        sft_token_loss(logits, labels), optax.softmax_cross_entropy_with_integer_labels(logits, labels), rtol=1e-5
    )
    np.testing.assert_allclose(
        _grad(lambda z: sft_token_loss(z, labels), logits), ref.softmax(logits) - ref.one_hot(labels, V), atol=1e-6
    )


def test_sft_label_smoothing_matches_optax_smoothed_targets(case):
    """Target `(1 - eps) onehot + eps / V`: optax's smoothed labels, and the gradient `pi - target`."""
    logits, _, labels = case
    eps = 0.1
    target = optax.smooth_labels(jax.nn.one_hot(labels, V), eps)
    np.testing.assert_allclose(
        sft_token_loss(logits, labels, label_smoothing=eps), optax.softmax_cross_entropy(logits, target), rtol=1e-5
    )
    grad = _grad(lambda z: sft_token_loss(z, labels, label_smoothing=eps), logits)
    np.testing.assert_allclose(grad, ref.softmax(logits) - np.asarray(target), atol=1e-6)


def test_sft_stays_accurate_for_confident_predictions(case):
    """-log pi(y) ~ 1e-15 when the label leads by 40 nats: no cancellation against logsumexp."""
    logits, _, labels = case
    confident = logits.copy()
    confident[np.arange(N), labels] = logits.max(-1) + 40.0
    # -log pi_y = log1p(sum_{k != y} exp(z_k - z_y)); even float64 log_softmax rounds it to 0.
    gaps = confident.astype(np.float64) - confident[np.arange(N), labels][:, None]
    gaps[np.arange(N), labels] = -np.inf
    expected = np.log1p(np.exp(gaps).sum(-1))
    assert np.all(expected > 1e-18)
    np.testing.assert_allclose(sft_token_loss(confident, labels), expected, rtol=1e-4)


def test_sft_entropy(case):
    logits, _, labels = case
    alpha = 0.4
    loss_fn = lambda z: sft_entropy_token_loss(z, labels, alpha=alpha)
    np.testing.assert_allclose(
        loss_fn(logits), -ref.label_log_prob(logits, labels) - alpha * ref.entropy(logits), rtol=1e-5
    )
    p, log_p = ref.softmax(logits), ref.log_softmax(logits)
    # dH/dz = -p (log p + H)
    entropy_grad = -p * (log_p + ref.entropy(logits)[:, None])
    np.testing.assert_allclose(_grad(loss_fn, logits), p - ref.one_hot(labels, V) - alpha * entropy_grad, atol=1e-5)


def test_dft_weights_cross_entropy_by_constant_label_probability(case):
    logits, _, labels = case
    p_label = np.exp(ref.label_log_prob(logits, labels))
    np.testing.assert_allclose(dft_token_loss(logits, labels), -p_label * np.log(p_label), rtol=1e-5)
    np.testing.assert_allclose(
        _grad(lambda z: dft_token_loss(z, labels), logits),
        p_label[:, None] * (ref.softmax(logits) - ref.one_hot(labels, V)),
        atol=1e-6,
    )


def test_asft_adds_the_full_vocabulary_kl_to_the_base(case):
    logits, ref_logits, labels = case
    gamma = 0.5
    loss_fn = lambda z: asft_token_loss(z, ref_logits, labels, gamma=gamma)
    p_label = np.exp(ref.label_log_prob(logits, labels))
    kl = ref.kl(logits, ref_logits)
    np.testing.assert_allclose(loss_fn(logits), -p_label * np.log(p_label) + gamma * kl, rtol=1e-5)
    p = ref.softmax(logits)
    kl_grad = p * (ref.log_softmax(logits) - ref.log_softmax(ref_logits) - kl[:, None])
    np.testing.assert_allclose(
        _grad(loss_fn, logits), p_label[:, None] * (p - ref.one_hot(labels, V)) + gamma * kl_grad, atol=1e-5
    )
    ref_grad = jax.grad(lambda r: asft_token_loss(logits, r, labels, gamma=gamma).sum())(ref_logits)
    np.testing.assert_array_equal(ref_grad, 0.0)


def test_psft_is_the_clipped_surrogate_with_unit_advantage(case):
    logits, _, labels = case
    eps = 0.2
    log_p = ref.label_log_prob(logits, labels)
    # Ratios spread over below, inside and above the clip range, plus one huge ratio.
    log_ratio = np.linspace(-1.0, 1.0, N)
    log_ratio[-1] = 1e4
    old_logprobs = (log_p - log_ratio).astype(np.float32)
    ratio = np.exp(np.minimum(log_p - old_logprobs.astype(np.float64), 50.0))
    expected = -np.minimum(ratio, np.clip(ratio, 1 - eps, 1 + eps))
    loss_fn = lambda z: psft_token_loss(z, labels, old_logprobs, clip_eps=eps)
    np.testing.assert_allclose(loss_fn(logits), expected, rtol=1e-4)
    # Gradient r * (softmax - onehot) while r < 1 + eps (the clip only binds above).
    active = (ratio < 1 + eps)[:, None]
    expected_grad = np.where(active, ratio[:, None] * (ref.softmax(logits) - ref.one_hot(labels, V)), 0.0)
    grad = _grad(loss_fn, logits)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, expected_grad, atol=1e-5)
    assert active.any() and not active.all()


def test_losses_accept_leading_batch_axes(case):
    logits, ref_logits, labels = case
    shaped = lambda x: jnp.reshape(x, (4, 8) + x.shape[1:])
    np.testing.assert_array_equal(
        asft_token_loss(shaped(logits), shaped(ref_logits), shaped(labels), gamma=0.1),
        shaped(asft_token_loss(logits, ref_logits, labels, gamma=0.1)),
    )


def test_shape_errors_name_the_loss(case):
    logits, ref_logits, labels = case
    with pytest.raises(ValueError, match="psft_token_loss: old_logprobs must have"):
        psft_token_loss(logits, labels, np.zeros(N - 1, np.float32))
    with pytest.raises(ValueError, match="asft_token_loss: ref_logits must have"):
        asft_token_loss(logits, ref_logits[:, :-1], labels, gamma=0.1)
    with pytest.raises(ValueError, match="dft_token_loss: labels must have shape"):
        dft_token_loss(logits, labels[:-1])
