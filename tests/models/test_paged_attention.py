"""Paged ragged decode attention against dense decode attention over the same tokens (float32, 1e-5)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.pallas.ops.tpu.ragged_paged_attention import ref_ragged_paged_attention

from gift_jax.models import Transformer, init_cache
from gift_jax.models.paged_attention import (
    attend_pages,
    init_paged_cache,
    page_arrays,
    ragged_attention_xla,
    write_prefill,
)
from gift_jax.models.transformer import _cached_attention
from tests.rollout.test_sampler import TINY

B, H, K, D = 4, 4, 2, 8
LENGTHS = np.array([1, 17, 300, 70])  # rows end inside different pages and chunks; row 0 sees one key


def _dense_and_paged(page_size: int, backend: str, seed: int = 0):
    """Random q and a dense cache `[B, K, S, D]`, and the same keys / values scattered over a shuffled pool."""
    rng = np.random.RandomState(seed)
    slots = 320
    q = rng.randn(B, H, D).astype(np.float32)
    k = (rng.randn(B, K, slots, D) * 2).astype(np.float32)
    v = rng.randn(B, K, slots, D).astype(np.float32)
    per_row = -(-slots // page_size)
    pool = B * per_row + 1  # page 0: scratch
    table = (1 + rng.permutation(B * per_row)).reshape(B, per_row).astype(np.int32)
    layer = [np.array(a) for a in page_arrays(CONFIG, pool, page_size, jnp.float32, backend)]
    for b in range(B):
        for t in range(slots):
            page, offset = table[b, t // page_size], t % page_size
            if backend == "tpu":
                layer[0][page, offset, 0::2], layer[0][page, offset, 1::2] = k[b, :, t], v[b, :, t]
            else:
                layer[0][:, page, offset], layer[1][:, page, offset] = k[b, :, t], v[b, :, t]
    mask = (np.arange(slots)[None, :] < LENGTHS[:, None])[:, None, None, :]
    dense = np.asarray(_cached_attention(q[:, None], k, v, mask))[:, 0]
    return q, tuple(jnp.asarray(a) for a in layer), table, dense


CONFIG = TINY  # 4 query heads, 2 kv heads of 8


@pytest.mark.parametrize("backend", ["xla", "tpu"])  # the two page layouts, both through the pure-JAX path
@pytest.mark.parametrize("page_size", [16, 64])
def test_ragged_xla_path_equals_dense_attention(page_size, backend):
    q, layer, table, dense = _dense_and_paged(page_size, backend)
    paged = ragged_attention_xla(jnp.asarray(q), layer, jnp.asarray(table), jnp.asarray(LENGTHS, jnp.int32), backend)
    np.testing.assert_allclose(np.asarray(paged), dense, atol=1e-5, rtol=1e-5)


def test_tpu_kernel_layout_matches_its_reference():
    """The TPU kernel's own pure-JAX reference reads our pool as we do (the kernel itself does not run
    on CPU in jax 0.10.2, in either Pallas interpret mode; the fit check compiles it for TPU)."""
    q, layer, table, dense = _dense_and_paged(16, "tpu")
    reference = ref_ragged_paged_attention(
        jnp.asarray(q),
        layer[0],
        jnp.asarray(LENGTHS, jnp.int32),
        jnp.asarray(table),
        jnp.arange(B + 1, dtype=jnp.int32),
        jnp.array([B], jnp.int32),
        sm_scale=D**-0.5,
    )
    np.testing.assert_allclose(np.asarray(reference), dense, atol=1e-5, rtol=1e-5)


def test_gpu_kernel_in_interpret_mode_equals_dense_attention():
    q, layer, table, dense = _dense_and_paged(16, "gpu")
    out = attend_pages(jnp.asarray(q), layer, jnp.asarray(table), jnp.asarray(LENGTHS, jnp.int32), "gpu")
    np.testing.assert_allclose(np.asarray(out), dense, atol=1e-5, rtol=1e-5)


def test_only_a_rows_own_pages_up_to_its_length_are_read():
    """Huge values in every other page, and past the row's length in its own: none reaches the output."""
    page_size = 16
    layer = page_arrays(CONFIG, 8, page_size, jnp.float32, "xla")[0].at[:].set(1e30)
    layer = layer.at[:, 3].set(1.0).at[:, 5, :4].set(1.0)  # the row's pages 3 and 5, positions [0, 20)
    table = jnp.array([[3, 5, 2]], jnp.int32)
    out = ragged_attention_xla(jnp.ones((1, H, D)), (layer, layer), table, jnp.array([20], jnp.int32))
    np.testing.assert_allclose(np.asarray(out), 1.0)


@pytest.mark.parametrize("backend", ["xla", "gpu"])  # gpu: the Pallas kernel, in interpret mode on CPU
def test_prefill_then_paged_decode_equals_the_uncached_forward(backend):
    """Rows of different lengths, prefilled densely and copied into pages, one paged decode step each."""
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    rows = [[3, 9, 4, 1, 7], [5, 2, 8, 8, 1, 6, 2, 9, 11, 4, 4, 30, 2, 5, 6, 7, 8, 9]]  # 5 and 18 tokens
    nxt = [13, 21]
    width = 18
    ids = np.zeros((2, width), np.int32)
    mask = np.zeros((2, width), np.int32)
    for r, row in enumerate(rows):
        ids[r, : len(row)], mask[r, : len(row)] = row, 1
    _, prefill = model.decode(jnp.asarray(ids), init_cache(CONFIG, 2, width), attention_mask=jnp.asarray(mask))
    page_size, per_row = 8, 4
    cache = init_paged_cache(CONFIG, 2, 9, page_size, per_row, backend=backend)
    table = jnp.array([[7, 2, 5, 0], [1, 8, 3, 6]], jnp.int32)  # the rows' pages interleaved; 0: scratch
    lengths = jnp.array([len(r) for r in rows], jnp.int32)
    cache = write_prefill(cache, prefill.k, prefill.v, jnp.arange(2), jnp.zeros(2, jnp.int32), table, lengths)
    cache = cache.replace(page_table=table, lengths=lengths)
    logits, cache = model.decode_paged(jnp.asarray(nxt, jnp.int32), cache)
    np.testing.assert_array_equal(np.asarray(cache.lengths), [6, 19])
    for r, row in enumerate(rows):
        full = model(jnp.asarray([row + [nxt[r]]]))[0, -1]
        np.testing.assert_allclose(np.asarray(logits[r]), np.asarray(full), atol=1e-5)
