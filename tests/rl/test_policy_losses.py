"""Policy losses by name (PPO-clip, GSPO, CISPO) against verl's published code ported into numpy
(`reference_ports.py`, file and commit named there): loss values and gradients w.r.t. the log-probs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.rl import POLICY_LOSSES, grpo_loss_terms, policy_loss, rollout_correction_weights
from tests.rl import reference_ports as ref

B, T = 5, 7
LENGTHS = np.array([7, 4, 1, 6, 0])  # the last row is padding
MASK = (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.float64)
ADVANTAGES = np.array([1.0, -0.5, 0.7, -1.2, 0.3])


def _inputs(token_log_ratio: np.ndarray, seed: int = 0):
    """Float64 (old log-probs, current log-probs) with the given log(pi / pi_old) per token."""
    old = -np.random.default_rng(seed).uniform(0.1, 3.0, size=(B, T))
    return old, old + token_log_ratio


def _jax_loss(name: str, old, **options):
    """`policy_loss` of the log-probs alone (float32), the other arguments fixed."""

    def loss(logprobs):
        return policy_loss(
            logprobs, jnp.asarray(old, jnp.float32), jnp.asarray(ADVANTAGES, jnp.float32), MASK, loss=name, **options
        )[0]

    return loss


def _compare(name, old, logprobs, reference, rtol=1e-5, grad_atol=2e-6, **options):
    """Our loss and its gradient against `reference(log_prob)` (float64, finite differences)."""
    ours = _jax_loss(name, old, **options)
    x = jnp.asarray(logprobs, jnp.float32)
    np.testing.assert_allclose(float(jax.jit(ours)(x)), reference(logprobs), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(
        np.asarray(jax.grad(ours)(x)), ref.numerical_gradient(reference, logprobs), rtol=1e-4, atol=grad_atol
    )


def _away_from(values, kinks, distance=1e-4):
    """The ratios are not within `distance` of a clip boundary (finite differences need smoothness)."""
    return all(np.abs(values[MASK > 0] - kink).min() > distance for kink in kinks)


def _is_weights(old, logprobs):
    """Importance weights (this project's, checked against verl's port in test_rollout_correction)."""
    rollout = old + np.random.default_rng(7).normal(0, 0.3, size=old.shape)
    return np.asarray(rollout_correction_weights(old, rollout, MASK, threshold=2.0), np.float64)


TOKEN_LOG_RATIO = np.random.default_rng(1).uniform(-0.9, 1.3, size=(B, T))


@pytest.mark.parametrize("dual_clip_c", [3.0, None])
@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("with_weights", [False, True])
def test_ppo_clip_equals_verl_vanilla(dual_clip_c, agg_mode, with_weights):
    old, logprobs = _inputs(TOKEN_LOG_RATIO)
    ratio = np.exp(TOKEN_LOG_RATIO)
    assert _away_from(ratio, [0.8, 1.28, 3.0])
    weights = _is_weights(old, logprobs) if with_weights else None

    def reference(lp):
        return ref.policy_loss_vanilla(
            old,
            lp,
            ADVANTAGES[:, None] * np.ones((B, T)),
            MASK,
            agg_mode,
            clip_low=0.2,
            clip_high=0.28,
            clip_ratio_c=dual_clip_c or 1e9,  # verl always dual-clips; a huge constant switches it off
            rollout_is_weights=weights,
        )

    _compare(
        "ppo_clip",
        old,
        logprobs,
        reference,
        clip_low=0.2,
        clip_high=0.28,
        agg_mode=agg_mode,
        dual_clip_c=dual_clip_c,
        is_weights=weights,
    )


# Row means of log(pi / pi_old) inside GSPO's range (1e-4), outside it on either side (+-1e-3), and
# one far above; the tokens of a row scatter around their mean.
GSPO_ROW_MEANS = np.array([1e-4, -1e-3, 2e-3, -5e-5, 0.0])


@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("clips", [None, (0.002, 0.003)])
def test_gspo_equals_verl(with_weights, clips):
    spread = np.random.default_rng(2).normal(0, 0.05, size=(B, T))
    spread -= masked_row_mean(spread)[:, None]  # keep each row's mean where GSPO_ROW_MEANS puts it
    old, logprobs = _inputs(GSPO_ROW_MEANS[:, None] + spread)
    clip_low, clip_high = clips or (POLICY_LOSSES["gspo"].clip_low, POLICY_LOSSES["gspo"].clip_high)
    sequence_ratio = np.exp(masked_row_mean(logprobs - old))
    assert _away_from(np.repeat(sequence_ratio[:, None], T, 1), [1 - clip_low, 1 + clip_high], 1e-5)
    weights = _is_weights(old, logprobs) if with_weights else None

    def reference(lp):
        return ref.policy_loss_gspo(
            old,
            lp,
            logprobs,
            ADVANTAGES[:, None] * np.ones((B, T)),
            MASK,
            clip_low=clip_low,
            clip_high=clip_high,
            rollout_is_weights=weights,
        )

    options = {} if clips is None else {"clip_low": clip_low, "clip_high": clip_high}
    _compare("gspo", old, logprobs, reference, is_weights=weights, **options)  # GSPO's defaults: seq-mean-token-mean


def masked_row_mean(values):
    return (values * MASK).sum(axis=1) / np.maximum(MASK.sum(axis=1), 1)


@pytest.mark.parametrize("clips", [None, (0.2, 0.28)])
@pytest.mark.parametrize("with_weights", [False, True])
def test_cispo_equals_verl(clips, with_weights):
    old, logprobs = _inputs(TOKEN_LOG_RATIO)
    clip_low, clip_high = clips or (POLICY_LOSSES["cispo"].clip_low, POLICY_LOSSES["cispo"].clip_high)
    weights = _is_weights(old, logprobs) if with_weights else None

    def reference(lp):
        return ref.policy_loss_cispo(
            old,
            lp,
            logprobs,
            ADVANTAGES[:, None] * np.ones((B, T)),
            MASK,
            "token-mean",
            clip_low=clip_low,
            clip_high=clip_high,
            rollout_is_weights=weights,
        )

    options = {} if clips is None else {"clip_low": clip_low, "clip_high": clip_high}
    _compare("cispo", old, logprobs, reference, is_weights=weights, **options)


def test_cispo_keeps_the_gradient_of_clipped_tokens_where_ppo_clip_drops_it():
    old = jnp.full((1, 2), -1.0)
    logprobs = old + jnp.log(jnp.array([[2.0, 1.1]]))  # ratio 2 is clipped to 1.28 by both
    advantages = jnp.array([1.0])
    options = dict(clip_low=0.2, clip_high=0.28, agg_mode="token-mean")
    grads = {
        name: jax.grad(
            lambda lp, name=name: policy_loss(lp, old, advantages, jnp.ones((1, 2)), loss=name, **options)[0]
        )(logprobs)
        for name in ("ppo_clip", "cispo")
    }
    np.testing.assert_allclose(grads["ppo_clip"][0], [0.0, -1.1 / 2], rtol=1e-5)
    np.testing.assert_allclose(grads["cispo"][0], [-1.28 / 2, -1.1 / 2], rtol=1e-5)
    _, metrics = policy_loss(logprobs, old, advantages, jnp.ones((1, 2)), loss="cispo", **options)
    np.testing.assert_allclose(metrics["clip_frac"], 0.5)


def test_gspo_equals_ppo_clip_when_every_token_of_a_row_has_the_row_ratio():
    row_log_ratio = np.array([0.1, -0.3, 0.05, 0.4, 0.0])
    old, logprobs = _inputs(np.repeat(row_log_ratio[:, None], T, axis=1))
    options = dict(clip_low=0.2, clip_high=0.2, agg_mode="seq-mean-token-mean")
    values = {}
    for name in ("gspo", "ppo_clip"):
        loss = _jax_loss(name, old, **options)
        x = jnp.asarray(logprobs, jnp.float32)
        values[name] = (loss(x), jax.grad(loss)(x))
    np.testing.assert_allclose(values["gspo"][0], values["ppo_clip"][0], rtol=1e-6)
    np.testing.assert_allclose(values["gspo"][1], values["ppo_clip"][1], rtol=1e-5, atol=1e-8)


def test_registry_defaults_fill_only_what_is_left_out():
    assert POLICY_LOSSES["gspo"].agg_mode == "seq-mean-token-mean"
    assert (POLICY_LOSSES["gspo"].clip_low, POLICY_LOSSES["gspo"].clip_high) == (3e-4, 4e-4)
    old, logprobs = _inputs(TOKEN_LOG_RATIO * 1e-3)
    args = (jnp.asarray(logprobs), jnp.asarray(old), jnp.asarray(ADVANTAGES), MASK)
    by_default = policy_loss(*args, loss="gspo")[0]
    spelled_out = policy_loss(*args, loss="gspo", clip_low=3e-4, clip_high=4e-4, agg_mode="seq-mean-token-mean")[0]
    assert float(by_default) == float(spelled_out)
    assert float(policy_loss(*args, loss="gspo", agg_mode="token-mean")[0]) != float(by_default)


def test_unknown_losses_and_a_dual_clip_for_cispo_are_refused():
    args = (jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones(1), jnp.ones((1, 2)))
    with pytest.raises(
        ValueError, match=r"unknown policy loss 'grpo'; expected one of \['cispo', 'gspo', 'ppo_clip'\]"
    ):
        policy_loss(*args, loss="grpo")
    with pytest.raises(ValueError, match="dual_clip_c does not apply to the policy loss 'cispo'"):
        policy_loss(*args, loss="cispo", dual_clip_c=3.0)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_grpo_loss_terms_runs_every_loss_under_jit_with_expert_rows_left_unweighted(name):
    old, logprobs = _inputs(TOKEN_LOG_RATIO * 0.01)
    is_expert = jnp.array([False, False, True, False, False])
    weights = jnp.full((B, T), 0.5)
    terms = jax.jit(functools.partial(grpo_loss_terms, loss=name))
    args = (jnp.asarray(logprobs, jnp.float32), jnp.asarray(old, jnp.float32), jnp.asarray(ADVANTAGES), MASK)
    weighted, _ = terms(*args, is_weights=weights, is_expert=is_expert)
    plain, _ = terms(*args, is_expert=is_expert)
    expected = np.where(np.asarray(is_expert)[:, None], plain, 0.5 * np.asarray(plain))
    np.testing.assert_allclose(weighted, expected, rtol=1e-6)
