"""GRPO pieces against hand-computed numbers: advantages, aggregation, clipping, KL, LUFFY."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.rl import (
    AGG_MODES,
    aggregate,
    aggregate_loss,
    grpo_advantages,
    grpo_loss_terms,
    kl_penalty,
    loss_denominator,
    luffy_shaped_per_token,
    policy_loss,
    ppo_clip_per_token,
)

# ---------------------------------------------------------------- advantages


def test_advantages_subtract_group_mean_only_by_default():
    rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    advantages = jax.jit(grpo_advantages, static_argnums=1)(rewards, 4)
    np.testing.assert_allclose(advantages, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_advantages_divided_by_sample_std_when_asked():
    rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    advantages = grpo_advantages(rewards, 4, norm_by_std=True)
    sample_std = math.sqrt(4 * 0.25 / 3)  # ddof=1
    expected = 0.5 / (sample_std + 1e-6)
    np.testing.assert_allclose(advantages, [expected, -expected, -expected, expected, 0, 0, 0, 0], rtol=1e-6)


@pytest.mark.parametrize(
    "rewards, group_size, message",
    [
        (jnp.zeros(6), 4, "do not split"),
        (jnp.zeros(4), 1, "group_size must be >= 2"),
        (jnp.zeros((2, 4)), 4, "must be flat"),
    ],
)
def test_advantages_reject_bad_shapes(rewards, group_size, message):
    with pytest.raises(ValueError, match=message):
        grpo_advantages(rewards, group_size)


# ---------------------------------------------------------------- aggregation

LOSS = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [100.0, 100.0, 100.0]])
MASK = jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # the last row is padding


@pytest.mark.parametrize(
    "agg_mode, seq_normaliser, numerator, denominator",
    [
        ("token-mean", None, 1 + 2 + 4, 3),
        ("seq-mean-token-mean", None, (1 + 2) / 2 + 4, 2),
        ("seq-mean-token-sum-norm", None, 7, 2 * 3),
        ("seq-mean-token-sum-norm", 10.0, 7, 2 * 10),
    ],
)
def test_aggregate_modes_by_hand(agg_mode, seq_normaliser, numerator, denominator):
    got_num, got_den = aggregate(LOSS, MASK, agg_mode, seq_normaliser=seq_normaliser)
    np.testing.assert_allclose([got_num, got_den], [numerator, denominator], rtol=1e-6)
    np.testing.assert_allclose(
        aggregate_loss(LOSS, MASK, agg_mode, seq_normaliser=seq_normaliser), numerator / denominator, rtol=1e-6
    )


@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_micro_batches_with_global_denominator_sum_to_the_mini_batch_loss(agg_mode):
    rng = np.random.default_rng(0)
    per_token = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    mask = jnp.asarray(rng.random((6, 5)) < 0.6).at[3].set(False)  # one empty row

    def loss_of(per_token_rows, mask_rows, denominator=None):
        return aggregate_loss(per_token_rows, mask_rows, agg_mode, global_denominator=denominator)

    whole = loss_of(per_token, mask)
    global_denominator = loss_denominator(mask, agg_mode)
    pieces = sum(loss_of(per_token[i : i + 2], mask[i : i + 2], global_denominator) for i in range(0, 6, 2))
    np.testing.assert_allclose(pieces, whole, rtol=1e-6)
    whole_grad = jax.grad(loss_of)(per_token, mask)
    piece_grads = jnp.concatenate(
        [jax.grad(loss_of)(per_token[i : i + 2], mask[i : i + 2], global_denominator) for i in range(0, 6, 2)]
    )
    np.testing.assert_allclose(piece_grads, whole_grad, rtol=1e-6)


def test_all_padding_batch_gives_zero_loss_not_nan():
    for agg_mode in AGG_MODES:
        assert float(aggregate_loss(LOSS, jnp.zeros_like(MASK), agg_mode)) == 0.0


def test_unknown_agg_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown agg_mode 'seq-sum'"):
        aggregate(LOSS, MASK, "seq-sum")


# ---------------------------------------------------------------- PPO clip


def _tokens(ratios):
    """Log-probs `[1, n]` with the given new/old ratios."""
    old = jnp.full((1, len(ratios)), -1.0)
    return old + jnp.log(jnp.array([ratios])), old


@pytest.mark.parametrize(
    "advantage, ratio, expected_loss, is_clipped, expected_grad",
    [
        (1.0, 1.5, -1.2, True, 0.0),  # A > 0, ratio above 1 + eps: clipped, no gradient
        (1.0, 0.5, -0.5, False, -0.5),  # A > 0, ratio below range: surrogate keeps pushing up
        (-1.0, 0.5, 0.8, True, 0.0),  # A < 0, ratio below 1 - eps: clipped, no gradient
        (-1.0, 1.5, 1.5, False, 1.5),  # A < 0, ratio above range: pessimistic branch, gradient
        (2.0, 1.1, -2.2, False, -2.2),  # inside the range: plain ratio * A
    ],
)
def test_clip_cases(advantage, ratio, expected_loss, is_clipped, expected_grad):
    logprobs, old = _tokens([ratio])
    advantages = jnp.array([advantage])

    def total(lp):
        return ppo_clip_per_token(lp, old, advantages)[0].sum()

    loss, clipped, _ = ppo_clip_per_token(logprobs, old, advantages)
    np.testing.assert_allclose(loss[0, 0], expected_loss, rtol=1e-5)
    assert bool(clipped[0, 0]) is is_clipped
    # d(-A r)/d logp = -A r on the active branch, 0 where the constant clipped branch wins.
    np.testing.assert_allclose(jax.grad(total)(logprobs)[0, 0], expected_grad, rtol=1e-5, atol=1e-7)


def test_clip_higher_widens_only_the_upper_bound():
    logprobs, old = _tokens([1.25, 0.75])
    loss, clipped, _ = ppo_clip_per_token(logprobs, old, jnp.array([1.0]), clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose(loss[0], [-1.25, -0.75], rtol=1e-5)
    assert not clipped.any()


def test_dual_clip_caps_negative_advantage_loss():
    logprobs, old = _tokens([5.0, 2.0])
    for advantage, expected, expect_dual in [(-1.0, [3.0, 2.0], [True, False]), (1.0, [-1.2, -1.2], [False, False])]:
        loss, _, dual = ppo_clip_per_token(logprobs, old, jnp.array([advantage]), dual_clip_c=3.0)
        np.testing.assert_allclose(loss[0], expected, rtol=1e-5)
        np.testing.assert_array_equal(dual[0], expect_dual)
    grad = jax.grad(lambda lp: ppo_clip_per_token(lp, old, jnp.array([-1.0]), dual_clip_c=3.0)[0].sum())(logprobs)
    np.testing.assert_allclose(grad[0], [0.0, 2.0], rtol=1e-5)


def test_dual_clip_constant_must_exceed_one():
    logprobs, old = _tokens([1.0])
    with pytest.raises(ValueError, match="dual_clip_c must be > 1"):
        ppo_clip_per_token(logprobs, old, jnp.array([1.0]), dual_clip_c=0.5)


def test_advantage_shape_is_checked():
    logprobs, old = _tokens([1.0, 1.0])
    with pytest.raises(ValueError, match="advantages must have shape"):
        ppo_clip_per_token(logprobs, old, jnp.ones(3))


def test_policy_loss_aggregates_and_reports_metrics():
    # Row 0: ratios 1.5 (clipped), 1.0, pad; row 1: ratio 0.5 (clipped for A < 0).
    old = jnp.full((2, 3), -1.0)
    logprobs = old + jnp.log(jnp.array([[1.5, 1.0, 9.0], [0.5, 1.0, 1.0]]))
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    advantages = jnp.array([1.0, -1.0])
    step = jax.jit(functools.partial(policy_loss, agg_mode="token-mean"))
    loss, metrics = step(logprobs, old, advantages, mask)
    np.testing.assert_allclose(loss, (-1.2 - 1.0 + 0.8) / 3, rtol=1e-5)
    np.testing.assert_allclose(metrics["clip_frac"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics["ratio_mean"], (1.5 + 1.0 + 0.5) / 3, rtol=1e-5)
    np.testing.assert_allclose(metrics["ratio_max"], 1.5, rtol=1e-5)  # the padded 9.0 is ignored
    d = np.log([1.5, 1.0, 0.5])  # log(pi / pi_old); KL(old || new) estimators use -d
    np.testing.assert_allclose(metrics["approx_kl_k3"], np.mean(np.exp(d) - d - 1), rtol=1e-5)
    np.testing.assert_allclose(metrics["approx_kl_k2"], np.mean(0.5 * d**2), rtol=1e-5)
    seq_loss, _ = policy_loss(logprobs, old, advantages, mask, agg_mode="seq-mean-token-mean")
    np.testing.assert_allclose(seq_loss, ((-1.2 - 1.0) / 2 + 0.8) / 2, rtol=1e-5)


# ---------------------------------------------------------------- KL estimators


def test_kl_estimators_by_hand():
    logprobs, ref = jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))
    d = math.log(2.0)
    np.testing.assert_allclose(kl_penalty(logprobs, ref, "k1"), [d], rtol=1e-6)
    np.testing.assert_allclose(kl_penalty(logprobs, ref, "k2"), [0.5 * d * d], rtol=1e-6)
    np.testing.assert_allclose(kl_penalty(logprobs, ref, "k3"), [0.5 + d - 1.0], rtol=1e-5)


def test_k1_and_k3_are_unbiased_estimates_of_kl():
    rng = np.random.default_rng(1)
    policy = jax.nn.log_softmax(jnp.asarray(rng.normal(size=7), jnp.float32))
    ref = jax.nn.log_softmax(jnp.asarray(rng.normal(size=7), jnp.float32))
    exact_kl = jnp.sum(jnp.exp(policy) * (policy - ref))
    for kind in ("k1", "k3"):
        expectation = jnp.sum(jnp.exp(policy) * kl_penalty(policy, ref, kind))
        np.testing.assert_allclose(expectation, exact_kl, rtol=1e-4)


def test_k3_is_clamped_like_verl():
    # ref - logp = +100 overflows exp without the clamp; -100 gives 99 unclamped (and 19 after
    # the +-20 clamp of the log-ratio); both end at the +10 cap on the estimate.
    k3 = kl_penalty(jnp.array([-100.0, 0.0]), jnp.array([0.0, -100.0]), "k3")
    np.testing.assert_allclose(k3, [10.0, 10.0])
    assert kl_penalty(jnp.array([0.0]), jnp.array([-0.5]), "k3")[0] >= 0.0
    with pytest.raises(ValueError, match="unknown kind 'k4'"):
        kl_penalty(jnp.zeros(1), jnp.zeros(1), "k4")


# ---------------------------------------------------------------- LUFFY shaping and loss terms


def test_luffy_shaping_gradient_is_f_prime_times_dp():
    gamma, advantage, target = 0.1, 1.5, 2
    logits = jnp.array([0.3, -1.0, 0.2, 2.0])

    def shaped_loss(z):
        logprob = jax.nn.log_softmax(z)[target]
        return luffy_shaped_per_token(logprob.reshape(1, 1), jnp.array([advantage]), gamma=gamma).sum()

    probs = jax.nn.softmax(logits)
    p = probs[target]
    dp_dlogits = p * (jax.nn.one_hot(target, 4) - probs)
    f_prime = gamma / (p + gamma) ** 2
    np.testing.assert_allclose(shaped_loss(logits), -advantage * p / (p + gamma), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(shaped_loss)(logits), -advantage * f_prime * dp_dlogits, rtol=1e-5, atol=1e-7)


def test_expert_rows_use_unclipped_shaped_loss():
    old = jnp.full((2, 2), -3.0)
    logprobs = jnp.log(jnp.array([[0.4, 0.9], [0.4, 0.9]]))  # ratios far outside the clip range
    advantages = jnp.array([1.0, 1.0])
    mask = jnp.ones((2, 2))
    per_token, stats = grpo_loss_terms(logprobs, old, advantages, mask, is_expert=jnp.array([True, False]))
    p = np.array([0.4, 0.9])
    np.testing.assert_allclose(per_token[0], -p / (p + 0.1), rtol=1e-5)
    np.testing.assert_allclose(per_token[1], [-1.2, -1.2], rtol=1e-5)
    np.testing.assert_allclose(stats["expert_token_frac"], 0.5)
    np.testing.assert_allclose(stats["clip_frac"], 1.0)  # clip stats cover on-policy tokens only


def test_loss_terms_add_kl_and_subtract_entropy():
    rng = np.random.default_rng(2)
    logprobs, old, ref = (jnp.asarray(-rng.random((2, 3)), jnp.float32) for _ in range(3))
    entropy = jnp.asarray(rng.random((2, 3)), jnp.float32)
    advantages, mask = jnp.array([0.5, -0.5]), jnp.ones((2, 3))
    per_token, stats = grpo_loss_terms(
        logprobs, old, advantages, mask, ref_logprobs=ref, kl_coef=0.1, kl_kind="k2", entropy=entropy, entropy_coef=0.01
    )
    expected = ppo_clip_per_token(logprobs, old, advantages)[0] + 0.1 * kl_penalty(logprobs, ref, "k2") - 0.01 * entropy
    np.testing.assert_allclose(per_token, expected, rtol=1e-6)
    np.testing.assert_allclose(stats["entropy"], entropy.mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        grpo_loss_terms(logprobs, old, advantages, mask, kl_coef=0.1)
