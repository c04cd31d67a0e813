"""The probe's per-token figures from hidden states, chunk by chunk: exact, and memory flat in the probe length."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.evaluation.diagnostics import probe_head_sums


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _reference(hidden, w_out, base_hidden, base_w_out, targets, top_k):
    """Full-vocabulary float64 figures per row, from the whole `[B, T, V]` logits at once."""
    logp, base_logp = _log_softmax(hidden @ w_out), _log_softmax(base_hidden @ base_w_out)
    p = np.exp(logp)
    kl = (p * (logp - base_logp)).sum(-1)
    entropy = -(p * logp).sum(-1)
    top, base_top = np.argsort(-logp, -1)[..., :top_k], np.argsort(-base_logp, -1)[..., :top_k]
    overlap = (top[..., :, None] == base_top[..., None, :]).sum((-1, -2)) / top_k
    cosine = (hidden * base_hidden).sum(-1) / (np.linalg.norm(hidden, axis=-1) * np.linalg.norm(base_hidden, axis=-1))
    l2 = np.linalg.norm(hidden - base_hidden, axis=-1)
    w = targets.astype(np.float64)
    return {
        k: (v * w).sum(-1)
        for k, v in dict(kl=kl, overlap=overlap, entropy=entropy, hidden_cosine=cosine, hidden_l2=l2).items()
    }


@pytest.mark.parametrize("chunk_size", [4, 7, 64])  # several chunks, a ragged last chunk, one chunk for all of T
def test_chunked_figures_match_the_full_vocabulary_reference(chunk_size):
    rng = np.random.default_rng(0)
    b, t, d, v = 3, 19, 16, 300
    hidden = rng.normal(size=(b, t, d)).astype(np.float32)
    base_hidden = (hidden + 0.3 * rng.normal(size=(b, t, d))).astype(np.float32)
    w_out = (2.0 * rng.normal(size=(d, v))).astype(np.float32)  # peaked distributions
    base_w_out = (w_out + rng.normal(size=(d, v))).astype(np.float32)
    targets = (rng.random((b, t)) < 0.7).astype(np.int32)
    sums = probe_head_sums(hidden, w_out, base_hidden, base_w_out, targets, top_k=5, chunk_size=chunk_size)
    reference = _reference(*(x.astype(np.float64) for x in (hidden, w_out, base_hidden, base_w_out)), targets, 5)
    np.testing.assert_array_equal(np.asarray(sums.count), targets.sum(-1))
    for key, expected in reference.items():
        np.testing.assert_allclose(np.asarray(getattr(sums, key)), expected, rtol=2e-5, atol=1e-5, err_msg=key)
    assert 0 < reference["overlap"].sum() < targets.sum()  # top-K sets partly shared: overlap is exercised


def _temp_bytes(length, batch=8, d=64, vocab=151_936):
    hidden = jax.ShapeDtypeStruct((batch, length, d), jnp.float32)
    w_out = jax.ShapeDtypeStruct((d, vocab), jnp.float32)
    targets = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    fn = jax.jit(functools.partial(probe_head_sums, top_k=10))
    return fn.lower(hidden, w_out, hidden, w_out, targets).compile().memory_analysis().temp_size_in_bytes


def test_memory_is_flat_in_the_probe_length_at_qwen_vocabulary():
    """Compiled only (nothing allocated): 8 rows at V = 151,936. One `[8, 1024, V]` float32 buffer is
    4.6 GiB; the chunked probe needs a few `[8, 32, V]` ones at any length."""
    short, long = _temp_bytes(1024), _temp_bytes(4096)
    assert long < 8 * 1024 * 151_936 * 4 / 4, long
    assert long <= 1.05 * short, (short, long)
