"""The chunk scanner and the fused vocabulary reductions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from gift_jax.losses import compute_init_loss, scan_token_chunks
from gift_jax.losses.vocab_reductions import vocab_max_argmax, vocab_maxes, vocab_sums


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 50])
def test_scan_token_chunks_stitches_any_chunking_back(chunk_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 5)).astype(np.float32)
    ids = rng.integers(0, 5, size=(3, 7)).astype(np.int32)
    weight = rng.normal(size=(5, 4)).astype(np.float32)

    def per_token(chunk, w):
        xs, chunk_ids = chunk
        return {"proj": xs @ w, "picked": jnp.take_along_axis(xs, chunk_ids[..., None], -1)[..., 0]}

    def chunked_sum(w):
        out = scan_token_chunks(lambda c: per_token(c, w), (x, ids), chunk_size=chunk_size)
        return out, jnp.sum(jnp.sin(out["proj"]))

    out, _ = chunked_sum(weight)
    direct = per_token((x, ids), weight)
    for key in direct:
        assert out[key].shape == direct[key].shape
        np.testing.assert_allclose(out[key], direct[key], rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda w: chunked_sum(w)[1])(weight)
    np.testing.assert_allclose(grad, jax.grad(lambda w: jnp.sum(jnp.sin(x @ w)))(weight), rtol=1e-5, atol=1e-6)


def test_scan_token_chunks_rejects_bad_inputs():
    x = jnp.zeros((2, 6, 3))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        scan_token_chunks(lambda c: c, x, chunk_size=0)
    with pytest.raises(ValueError, match=r"must start with \[B, T\]=\(2, 6\)"):
        scan_token_chunks(lambda c: c, (x, jnp.zeros((2, 5))), chunk_size=2)


def test_batch_sharded_over_devices_matches_single_device():
    """Chunks run along T, so a batch sharded over 8 devices keeps its sharding and its result."""
    rng = np.random.default_rng(1)
    b, t, d, v = 8, 6, 4, 16
    hidden = rng.normal(size=(b, t, d)).astype(np.float32)
    w_out = rng.normal(size=(d, v)).astype(np.float32)
    labels = rng.integers(0, v, size=(b, t)).astype(np.int32)
    mask = np.ones((b, t), np.float32)

    def loss_and_grad(h, w, y, m):
        fn = lambda w_: (
            compute_init_loss("gift", h, w_, y, m, ref_hidden=h, ref_w_out=w, chunk_size=4, beta=2.0).loss_sum
        )
        return jax.value_and_grad(fn)(w)

    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    rows = NamedSharding(mesh, P("data"))
    sharded = jax.jit(loss_and_grad)(
        jax.device_put(hidden, rows), w_out, jax.device_put(labels, rows), jax.device_put(mask, rows)
    )
    single = jax.jit(loss_and_grad)(hidden, w_out, labels, mask)
    for a, b_ in zip(sharded, single):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-6)


def test_vocab_reductions_match_numpy():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 3, 11)).astype(np.float32), rng.normal(size=(2, 3, 11))
    sums = vocab_sums(x, jnp.exp(x), y)
    for got, want in zip(sums, (x.sum(-1), np.exp(x).sum(-1), y.sum(-1))):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    for got, want in zip(vocab_maxes(x, y), (x.max(-1), y.max(-1))):
        np.testing.assert_allclose(got, want)
    tied = np.array([[1.0, 3.0, 0.0, 3.0], [-np.inf, -np.inf, -np.inf, 2.0]], np.float32)
    max_value, argmax = vocab_max_argmax(tied)
    np.testing.assert_array_equal(max_value, [3.0, 2.0])
    np.testing.assert_array_equal(argmax, [1, 3])  # ties go to the lowest index, as jnp.argmax
    other = x[0, :2, :4]
    (max_other, argmax_other), (max_tied, argmax_tied) = vocab_max_argmax(other, tied)  # one pass, two arrays
    np.testing.assert_array_equal(argmax_tied, [1, 3])
    np.testing.assert_array_equal(max_other, other.max(-1))
    np.testing.assert_array_equal(argmax_other, other.argmax(-1))
    with pytest.raises(ValueError, match="at least two operands"):
        vocab_sums(x)
