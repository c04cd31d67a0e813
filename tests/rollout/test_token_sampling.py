"""Token choice: greedy, top-k / top-p limits, and the distribution of the returned log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.rollout.token_sampling import TokenRule, choose_tokens, first_argmax

LOGITS = jnp.asarray(np.random.RandomState(0).randn(6, 50) * 3, jnp.float32)


def _draws(rule, num=200):
    keys = jax.random.split(jax.random.key(0), num)
    return jax.vmap(lambda k: choose_tokens(LOGITS, k, rule))(keys)  # [num, 6] each


def test_greedy_top_k_one_and_tiny_top_p_all_pick_the_argmax():
    argmax = np.asarray(jnp.argmax(LOGITS, -1))
    for rule in (
        TokenRule(temperature=0.0),
        TokenRule(temperature=1.3, top_k=1),
        TokenRule(temperature=1.3, top_p=1e-6),
    ):
        tokens = _draws(rule, num=20).tokens
        assert (np.asarray(tokens) == argmax).all(), rule


def test_top_k_and_top_p_restrict_the_support():
    tokens = _draws(TokenRule(temperature=1.0, top_k=3)).tokens
    top3 = np.argsort(-np.asarray(LOGITS), -1)[:, :3]
    assert all(set(np.asarray(tokens)[:, r]) <= set(top3[r]) for r in range(6))

    probs = np.asarray(jax.nn.softmax(LOGITS, -1))
    tokens = _draws(TokenRule(temperature=1.0, top_p=0.5)).tokens
    for r in range(6):
        order = np.argsort(-probs[r])
        mass_above = np.cumsum(probs[r, order]) - probs[r, order]
        nucleus = set(order[mass_above <= 0.5])
        assert set(np.asarray(tokens)[:, r]) <= nucleus
    # Unrestricted sampling does leave the nucleus of some row.
    tokens = _draws(TokenRule(temperature=1.0)).tokens
    assert len(set(np.asarray(tokens)[:, 0])) > 3


def test_logprobs_and_entropies_are_of_the_scaled_unfiltered_distribution():
    for rule, temperature in ((TokenRule(temperature=0.7, top_k=5, top_p=0.8), 0.7), (TokenRule(temperature=0.0), 1.0)):
        tokens, logprobs, entropies = _draws(rule, num=10)
        log_probs = np.asarray(jax.nn.log_softmax(LOGITS / temperature, -1), np.float64)
        expected = np.take_along_axis(log_probs[None], np.asarray(tokens)[..., None], -1)[..., 0]
        np.testing.assert_allclose(logprobs, expected, atol=1e-6)
        np.testing.assert_allclose(
            entropies, np.broadcast_to(-(np.exp(log_probs) * log_probs).sum(-1), (10, 6)), atol=1e-5
        )


def test_first_argmax_matches_argmax_and_takes_the_first_tie():
    x = jnp.asarray([[1.0, 3.0, 3.0, 0.0], [-1.0, -2.0, -1.0, -5.0], [0.0, 0.0, 0.0, 0.0]])
    assert first_argmax(x).tolist() == [1, 0, 0]
    np.testing.assert_array_equal(first_argmax(LOGITS), jnp.argmax(LOGITS, -1))


def test_invalid_rules_are_rejected():
    with pytest.raises(ValueError, match="top_p must be in"):
        TokenRule(top_p=0.0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        TokenRule(temperature=-1.0)
