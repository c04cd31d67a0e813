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
    assert block_size_for(2048, 1) == 256 and block_size_for(96, 1) == 32 and block_size_for(32, 1) == 16
    assert block_size_for(2048, 5) is None and block_size_for(24, 1) is None
    buffer = jnp.zeros((2, 6), jnp.int32)
    np.testing.assert_array_equal(write_at(buffer, jnp.ones((2, 2), jnp.int32), jnp.array([0, 3]), axis=1),
                                  [[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    np.testing.assert_array_equal(write_at(buffer, jnp.ones((2, 2), jnp.int32), jnp.int32(4), axis=1),
                                  [[0, 0, 0, 0, 1, 1]] * 2)
