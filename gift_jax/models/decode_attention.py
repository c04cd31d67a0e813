"""Decode-time attention that visits only the filled part of the KV cache, and per-row cache writes.

A decode step (one new token per row) used to attend over every slot of the cache buffer, so step
1 of an 8k-token generation cost as much as step 8,000. Here the cache `[B, K, S, D]` is read in
blocks of `block` slots, and a `while_loop` visits only blocks `0 .. ceil(filled / block) - 1`,
where `filled` bounds the slots any row has written (its maximum over rows). An online softmax
(running maximum, running normaliser, rescaled accumulator) combines the blocks, so the result
equals softmax attention over the whole buffer up to float rounding. Keys past a row's own length
are hidden by the same per-row mask as before.

The cache index may be shared (`[]`, every row writes at the same slot: the static sampler's
left-padded batch) or per row (`[B]`: the continuous-batching engine, whose slots hold sequences
of different lengths); `write_at` handles both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DECODE_BLOCK = 256  # slots per block: big enough that the per-block loop overhead stays small on CPU
MIN_DECODE_BLOCK = 64  # smaller caches are attended densely (cheap, and no loop overhead)


def write_at(buffer: jax.Array, update: jax.Array, index: jax.Array, axis: int) -> jax.Array:
    """`buffer` with `update` written from `index` along `axis`; index `[]` (all rows) or `[B]` (per row).

    Both arrays lead with the batch dimension B. A per-row index writes row b at `index[b]`.
    """
    index = jnp.asarray(index)
    if index.ndim == 0:
        return jax.lax.dynamic_update_slice_in_dim(buffer, update, index, axis)
    return jax.vmap(lambda b, u, i: jax.lax.dynamic_update_slice_in_dim(b, u, i, axis - 1))(buffer, update, index)


def cache_length(slots: int, min_block: int = MIN_DECODE_BLOCK) -> int:
    """A decode cache length of at least `slots` that `block_size_for` can split into blocks.

    Lengths of two blocks or more round up to a multiple of `min_block` (e.g. a 32-token prompt
    bucket + 256 new tokens: 288 -> 320 slots, four blocks of 64 filled progressively instead of all
    288 attended at every step); paper-scale lengths (512 + 8192) are already multiples.
    """
    if slots < 2 * min_block:
        return slots
    return -(-slots // min_block) * min_block


def block_size_for(
    slots: int, queries: int, block: int = DECODE_BLOCK, min_block: int = MIN_DECODE_BLOCK
) -> int | None:
    """The block length blocked attention uses for a `slots`-long cache, or None to attend densely.

    Only single-token decode steps are blocked (a prefill touches the whole prompt anyway), and only
    when the cache splits into at least two whole blocks of at least `min_block` slots.
    """
    if queries != 1:
        return None
    while block >= min_block and (slots % block or slots < 2 * block):
        block //= 2
    return block if block >= min_block else None


def blocked_decode_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, filled: jax.Array, block: int
) -> jax.Array:
    """Grouped-query attention of q `[B, T, H, D]` over cache k, v `[B, K, S, D]`, blocks below `filled`.

    mask: `[B, 1, T, S]` bool (True = may attend). filled: `[]` int32, no row attends to a slot
    `>= filled`. Softmax statistics in float32; returns `[B, T, H, D]` in q's dtype.
    """
    b, t, h, d = q.shape
    kv_heads, slots = k.shape[1], k.shape[2]
    groups = h // kv_heads
    q = q.reshape(b, t, kv_heads, groups, d).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, groups * t, d)
    scale = d**-0.5
    num_blocks = jnp.minimum((filled + block - 1) // block, slots // block)

    def visit(carry):
        i, running_max, normaliser, acc = carry
        start = i * block
        k_block = jax.lax.dynamic_slice_in_dim(k, start, block, axis=2).astype(q.dtype)
        v_block = jax.lax.dynamic_slice_in_dim(v, start, block, axis=2).astype(q.dtype)
        m_block = jax.lax.dynamic_slice_in_dim(mask, start, block, axis=3)  # [B, 1, T, blk]
        # Cache as the left operand, as in the dense path (XLA:CPU reads the [blk, D] rows directly).
        scores = jax.lax.dot_general(
            k_block, q, (((3,), (3,)), ((0, 1), (0, 1))), preferred_element_type=jnp.float32
        )  # [B, K, blk, G*T]
        scores = scores.reshape(b, kv_heads, block, groups, t).transpose(0, 1, 3, 4, 2)  # [B, K, G, T, blk]
        scores = jnp.where(m_block[:, :, None], scores * scale, -jnp.inf)
        new_max = jnp.maximum(running_max, jnp.max(scores, axis=-1))
        # A block with no visible key keeps the maximum at -inf: shift by 0 so exp gives 0, not nan.
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        probs = jnp.exp(scores - shift[..., None])
        rescale = jnp.exp(running_max - shift)
        normaliser = normaliser * rescale + jnp.sum(probs, axis=-1)
        acc = acc * rescale[..., None] + jnp.einsum(
            "bkgts,bksd->bkgtd", probs.astype(q.dtype), v_block, preferred_element_type=jnp.float32
        )
        return i + 1, new_max, normaliser, acc

    stats = (b, kv_heads, groups, t)
    start = (
        jnp.zeros((), jnp.int32),
        jnp.full(stats, -jnp.inf, jnp.float32),
        jnp.zeros(stats, jnp.float32),
        jnp.zeros((*stats, d), jnp.float32),
    )
    _, _, normaliser, acc = jax.lax.while_loop(lambda c: c[0] < num_blocks, visit, start)
    out = (acc / normaliser[..., None]).astype(q.dtype)  # every query sees at least itself: normaliser > 0
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
