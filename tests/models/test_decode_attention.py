"""Blocked decode attention (filled blocks only, online softmax) against dense cached attention."""

import jax
import jax.numpy as jnp
import numpy as np

from gift_jax.models.decode_attention import block_size_for, blocked_decode_attention, write_at
from gift_jax.models.transformer import _cached_attention


def test_blocked_equals_dense_attention_for_per_row_lengths():
    b, h, kv, d, slots = 4, 4, 2, 8, 128
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, 1, h, d))
    k = jax.random.normal(keys[1], (b, kv, slots, d)) * 2
    v = jax.random.normal(keys[2], (b, kv, slots, d))
    lengths = jnp.array([1, 17, 40, 70])  # rows end inside different blocks; row 0 sees one key
    mask = (jnp.arange(slots)[None, :] < lengths[:, None])[:, None, None, :]
    mask = mask & (jnp.arange(slots) % 5 != 3)[None, None, None, :] | (jnp.arange(slots) == 0)  # holes: padding
    dense = _cached_attention(q, k, v, mask)
    for block in (16, 32, 64):
        blocked = blocked_decode_attention(q, k, v, mask, jnp.max(lengths), block)
        np.testing.assert_allclose(np.asarray(blocked), np.asarray(dense), atol=1e-5, rtol=1e-5)


def test_only_filled_blocks_are_read():
    """Keys past `filled` are never visited: NaN there does not reach the output."""
    q = jnp.ones((1, 1, 2, 4))
    k = jnp.ones((1, 1, 64, 4)).at[:, :, 32:].set(jnp.nan)
    v = jnp.ones((1, 1, 64, 4)).at[:, :, 32:].set(jnp.nan)
    mask = (jnp.arange(64) < 20)[None, None, None, :]
    out = blocked_decode_attention(q, k, v, mask, jnp.int32(20), 16)
    np.testing.assert_allclose(np.asarray(out), 1.0)


def test_block_choice_and_per_row_writes():
    assert block_size_for(2048, 1) == 256 and block_size_for(384, 1) == 128 and block_size_for(128, 1) == 64
    assert block_size_for(96, 1, min_block=16) == 32 and block_size_for(32, 1, min_block=16) == 16
    assert block_size_for(2048, 5) is None and block_size_for(96, 1) is None and block_size_for(288, 1) is None
    buffer = jnp.zeros((2, 6), jnp.int32)
    np.testing.assert_array_equal(
        write_at(buffer, jnp.ones((2, 2), jnp.int32), jnp.array([0, 3]), axis=1),
        [[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]],
    )
    np.testing.assert_array_equal(
        write_at(buffer, jnp.ones((2, 2), jnp.int32), jnp.int32(4), axis=1), [[0, 0, 0, 0, 1, 1]] * 2
    )


def test_ragged_cache_decode_step_equals_the_uncached_forward():
    """Rows of different lengths in one cache (per-row index), 128 slots: the blocked path end to end."""
    from flax import nnx

    from gift_jax.models import ModelConfig, Transformer, init_cache

    config = ModelConfig(
        family="qwen2",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        qkv_bias=True,
    )
    model = Transformer(config, rngs=nnx.Rngs(0))
    assert block_size_for(128, 1) == 64
    rows = [[3, 9, 4, 1, 7], [5, 2, 8, 8, 1, 6, 2, 9, 11]]
    nxt = [13, 21]
    ids = np.zeros((2, 9), np.int32)
    mask = np.zeros((2, 9), np.int32)
    for r, row in enumerate(rows):
        ids[r, : len(row)], mask[r, : len(row)] = row, 1
    cache = init_cache(config, 2, 128)
    cache = cache._replace(index=jnp.zeros((2,), jnp.int32))
    _, cache = model.decode(jnp.asarray(ids), cache, attention_mask=jnp.asarray(mask))
    cache = cache._replace(index=jnp.asarray([len(r) for r in rows], jnp.int32))  # next write per row
    logits, cache = model.decode(jnp.asarray(nxt)[:, None], cache)
    np.testing.assert_array_equal(np.asarray(cache.index), [6, 10])
    for r, row in enumerate(rows):
        full = model(jnp.asarray([row + [nxt[r]]]))[0, -1]
        np.testing.assert_allclose(np.asarray(logits[r, 0]), np.asarray(full), atol=1e-5)
