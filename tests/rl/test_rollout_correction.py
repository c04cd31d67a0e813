"""Rollout-vs-trainer correction weights against verl's `compute_rollout_correction_weights` and
`compute_rollout_rejection_mask` ported into numpy (`reference_ports.py`), and the mismatch metrics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.rl import mismatch_metrics, policy_loss, rollout_correction_weights
from tests.rl import reference_ports as ref

LENGTHS = np.array([6, 3, 1, 0, 5, 6])
MASK = (np.arange(6)[None, :] < LENGTHS[:, None]).astype(np.float64)


def _logprobs(scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    trainer = -rng.uniform(0.05, 4.0, size=MASK.shape)
    return trainer, trainer + rng.normal(0, scale, size=MASK.shape)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("threshold", [1.5, 2.0, 5.0])
@pytest.mark.parametrize("scale", [0.05, 0.6, 12.0])  # bf16-cache drift, a stale policy, the +-20 clamp
def test_truncated_weights_equal_verl(level, threshold, scale):
    trainer, rollout = _logprobs(scale)
    ours = jax.jit(functools.partial(rollout_correction_weights, level=level, threshold=threshold))(
        jnp.asarray(trainer, jnp.float32), jnp.asarray(rollout, jnp.float32), MASK
    )
    expected = ref.rollout_correction_weights(trainer - rollout, MASK, level, threshold)
    np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=1e-30)


@pytest.mark.parametrize("level, option", [("token", "token_k1"), ("sequence", "seq_sum_k1")])
@pytest.mark.parametrize("threshold", [1.2, 2.0])
@pytest.mark.parametrize("scale", [0.15, 1.0])
def test_masked_weights_equal_verl_rejection(level, option, threshold, scale):
    trainer, rollout = _logprobs(scale, seed=3)
    ours = rollout_correction_weights(trainer, rollout, MASK, level=level, mode="mask", threshold=threshold)
    expected = ref.rollout_rejection_mask(trainer - rollout, MASK, option, threshold)
    if threshold == 1.2 and scale == 0.15:
        assert 0 < expected.sum() < MASK.sum()  # some rows or tokens rejected, not all
    np.testing.assert_array_equal(np.asarray(ours), expected)


def test_mask_mode_takes_an_asymmetric_lower_bound():
    trainer = np.zeros((1, 4))
    rollout = -np.log([[0.4, 0.6, 1.0, 2.5]])  # weights 0.4, 0.6, 1.0, 2.5
    weights = rollout_correction_weights(trainer, rollout, np.ones((1, 4)), mode="mask", threshold=2.0, lower=0.5)
    np.testing.assert_array_equal(weights, [[0.0, 1.0, 1.0, 0.0]])


def test_weights_carry_no_gradient_and_multiply_the_per_token_loss():
    trainer, rollout = _logprobs(0.4, seed=5)
    advantages = jnp.linspace(-1, 1, len(LENGTHS))

    def loss(logprobs, weighted):
        weights = rollout_correction_weights(logprobs, rollout, MASK, threshold=2.0) if weighted else None
        return policy_loss(logprobs, jax.lax.stop_gradient(logprobs), advantages, MASK, is_weights=weights)[0]

    x = jnp.asarray(trainer, jnp.float32)
    weights = rollout_correction_weights(x, rollout, MASK, threshold=2.0)
    assert not np.any(
        np.asarray(jax.grad(lambda t: rollout_correction_weights(t, rollout, MASK, threshold=2.0).sum())(x))
    )
    # At ratio 1 the PPO-clip gradient of a token is -A / tokens; the weight scales it and adds nothing.
    expected = -np.asarray(advantages)[:, None] * np.asarray(weights) / MASK.sum()
    np.testing.assert_allclose(jax.grad(loss)(x, True), expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(
        jax.grad(loss)(x, False), -np.asarray(advantages)[:, None] * MASK / MASK.sum(), rtol=1e-5
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(threshold=0.5), "threshold must be >= 1"),
        (dict(threshold=2.0, level="row"), "level 'row' is not one of"),
        (dict(threshold=2.0, mode="clip"), "mode 'clip' is not one of"),
        (dict(threshold=2.0, mode="mask", lower=3.0), r"lower must be in \(0, threshold=2.0\]"),
        (dict(threshold=2.0, lower=0.5), "lower applies only to mode 'mask'"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        rollout_correction_weights(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), **settings)


def test_mismatch_metrics_by_hand():
    trainer, rollout = _logprobs(0.2, seed=9)
    weights = rollout_correction_weights(trainer, rollout, MASK, mode="mask", threshold=1.2)
    metrics = jax.jit(mismatch_metrics)(trainer, rollout, MASK, weights)
    on = MASK > 0
    d = rollout - trainer  # samples come from the rollout policy: KL(rollout || trainer), k3 with log(p_r / p_t)
    np.testing.assert_allclose(metrics["mismatch_kl_k3"], np.mean((np.exp(-d) + d - 1)[on]), rtol=1e-5)
    np.testing.assert_allclose(metrics["mismatch_logprob_diff_max"], np.abs(d[on]).max(), rtol=1e-6)
    np.testing.assert_allclose(metrics["rollout_is_masked_frac"], np.mean(np.asarray(weights)[on] == 0), rtol=1e-6)
    assert 0 < float(metrics["rollout_is_masked_frac"]) < 1
    assert float(metrics["rollout_is_weight_max"]) == 1.0
    assert set(mismatch_metrics(trainer, rollout, MASK)) == {"mismatch_kl_k3", "mismatch_logprob_diff_max"}
