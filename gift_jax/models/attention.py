"""Causal self-attention for training forwards (no KV cache), with interchangeable backends.

Shapes: B batch, T tokens, H query heads, K kv heads (H = K * G), D head dim.
Every backend takes q `[B, T, H, D]`, k, v `[B, T, K, D]` and segment ids `[B, T]` int (0 on padding,
one positive id per packed example) and returns `[B, T, H, D]` in q's dtype. Query t attends to key s
when `s <= t` and both carry the same non-zero segment id; every query also sees itself, which keeps
the softmax of a padding query finite (its output is never used). Outputs at padding positions are
unspecified (backends differ there); real positions agree.

Backends (`ModelConfig.attention`):
- `xla`: `jax.nn.dot_product_attention` with an explicit `[B, 1, T, T]` mask; materialises the
  `[B, H, T, T]` scores. The reference the others are tested against.
- `blockwise`: flash-style pure JAX (`blockwise_attention`): online softmax over key blocks, blocks
  above the diagonal skipped, GQA without repeating K / V, and a custom VJP that recomputes each
  block's probabilities, so forward and backward hold O(T x block) per head, never `[T, T]`.
- `splash`: the TPU Pallas splash-attention kernel (causal mask x segment ids, GQA in the kernel),
  run per example under `jax.shard_map` over the batch axes of the ambient mesh (`jax.set_mesh`).
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` (GPU flash attention), causal,
  with segments and padding given as a `[B, 1, T, T]` boolean mask (cuDNN turns it into a bias;
  no `[B, H, T, T]` scores).
- `auto`: splash on TPU, cudnn on GPU (bf16 / f16 only: cuDNN has no f32 flash attention), blockwise
  elsewhere; the choice is logged once.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from gift_jax.models.config import ATTENTION_BACKENDS
from gift_jax.parallel.mesh import BATCH_AXES

DEFAULT_BLOCK_SIZE = 512  # query / key block of `blockwise` and `splash`
_AUTO_BY_PLATFORM = {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn", "rocm": "cudnn"}
_logged_choices: set[tuple[str, str]] = set()
log = logging.getLogger(__name__)


def resolve_backend(name: str, platform: str | None = None, dtype=jnp.bfloat16) -> str:
    """The concrete backend for `name` ("auto" -> by `platform`, default `jax.default_backend()`,
    and the compute `dtype`)."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention={name!r}; expected one of {list(ATTENTION_BACKENDS)}")
    if name != "auto":
        return name
    platform = platform or jax.default_backend()
    chosen = _AUTO_BY_PLATFORM.get(platform, "blockwise")
    if chosen == "cudnn" and jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        chosen = "blockwise"
    if (platform, chosen) not in _logged_choices:  # trace-time Python, once per platform
        _logged_choices.add((platform, chosen))
        log.warning("attention=auto on %s: using the %r backend", platform, chosen)
    return chosen


def causal_attention(q, k, v, segment_ids, *, backend: str = "xla", block_size: int = DEFAULT_BLOCK_SIZE):
    """Causal, segment-masked grouped-query attention (see the module docstring for shapes)."""
    backend = resolve_backend(backend, dtype=q.dtype)
    if backend == "xla":
        return jax.nn.dot_product_attention(q, k, v, mask=segment_mask(segment_ids)[:, None])
    if backend == "cudnn":
        return jax.nn.dot_product_attention(
            q, k, v, mask=segment_mask(segment_ids)[:, None], is_causal=True, implementation="cudnn"
        )
    if backend == "blockwise":
        return blockwise_attention(q, k, v, segment_ids, block_size=block_size)
    return splash_attention(q, k, v, segment_ids, block_size=block_size)


def _allowed(q_index, k_index, q_segments, k_segments):
    """Bool `[B, Tq, Tk]`: causal within a non-zero segment, or the diagonal.

    q_index `[Tq]` / k_index `[Tk]` absolute token indices; q_segments `[B, Tq]`, k_segments `[B, Tk]`.
    """
    causal = k_index[None, :] <= q_index[:, None]
    same = (q_segments[:, :, None] == k_segments[:, None, :]) & (k_segments[:, None, :] != 0)
    return (causal[None] & same) | (k_index[None, :] == q_index[:, None])[None]


def segment_mask(segment_ids):
    """The full boolean mask `[B, T, T]` of `_allowed` (reference backends only)."""
    index = jnp.arange(segment_ids.shape[1])
    return _allowed(index, index, segment_ids, segment_ids)


# -- blockwise (flash-style, pure JAX) ------------------------------------------------------------


def blockwise_attention(q, k, v, segment_ids, *, block_size: int = DEFAULT_BLOCK_SIZE):
    """`causal_attention` in O(T x block) memory per head, forward and backward.

    T is padded up to a multiple of the block with segment 0 (padding) and the padding cut off again.
    """
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    block = min(block_size, t)
    padded = -(-t // block) * block
    if padded != t:
        pad = ((0, 0), (0, padded - t), (0, 0), (0, 0))
        q, k, v = jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad)
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, padded - t)))
    # [B, K, G, T, D] queries (pre-scaled), [B, K, T, D] keys / values: heads lead, tokens next.
    qg = (q * jnp.asarray(d**-0.5, q.dtype)).reshape(b, padded, kv_heads, h // kv_heads, d).transpose(0, 2, 3, 1, 4)
    out = _flash(qg, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), segment_ids.astype(jnp.int32), block)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, padded, h, d)[:, :t]


def _block(x, i, block, axis):
    return jax.lax.dynamic_slice_in_dim(x, i * block, block, axis=axis)


def _block_scores(q_i, k_j, seg_q, seg_k, i, j, block):
    """Masked f32 scores `[B, K, G, bq, bk]` of query block i against key block j (-inf where hidden)."""
    s = jnp.einsum("bkgqd,bkcd->bkgqc", q_i, k_j, preferred_element_type=jnp.float32)
    index = jnp.arange(block)
    allowed = _allowed(i * block + index, j * block + index, seg_q, seg_k)  # [B, bq, bk]
    return jnp.where(allowed[:, None, None], s, -jnp.inf)


def _flash_forward(q, k, v, seg, block):
    """(out `[B, K, G, T, D]` in q's dtype, logsumexp `[B, K, G, T]` f32); key blocks j <= i only."""
    num_blocks = q.shape[3] // block

    def query_block(i):
        q_i, seg_q = _block(q, i, block, 3), _block(seg, i, block, 1)

        def key_block(j, carry):
            m, denom, acc = carry
            s = _block_scores(q_i, _block(k, j, block, 2), seg_q, _block(seg, j, block, 1), i, j, block)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # a row with no visible key yet
            p = jnp.exp(s - m_safe[..., None])
            correction = jnp.exp(m - m_safe)
            v_j = _block(v, j, block, 2)
            pv = jnp.einsum("bkgqc,bkcd->bkgqd", p.astype(v.dtype), v_j, preferred_element_type=jnp.float32)
            return m_new, denom * correction + jnp.sum(p, axis=-1), acc * correction[..., None] + pv

        stats = q_i.shape[:-1]
        init = (
            jnp.full(stats, -jnp.inf, jnp.float32),
            jnp.zeros(stats, jnp.float32),
            jnp.zeros(q_i.shape, jnp.float32),
        )
        m, denom, acc = jax.lax.fori_loop(0, i + 1, key_block, init)  # causal: blocks above the diagonal skipped
        return (acc / denom[..., None]).astype(q.dtype), m + jnp.log(denom)

    out, lse = jax.lax.map(query_block, jnp.arange(num_blocks))  # [n, B, K, G, bq, (D)]
    out = jnp.moveaxis(out, 0, 3).reshape(q.shape)
    lse = jnp.moveaxis(lse, 0, 3).reshape(q.shape[:-1])
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, seg, block):
    return _flash_forward(q, k, v, seg, block)[0]


def _flash_fwd(q, k, v, seg, block):
    out, lse = _flash_forward(q, k, v, seg, block)
    return out, (q, k, v, seg, out, lse)


def _flash_bwd(block, residuals, d_out):
    """FlashAttention-2 backward: per key block j, loop over query blocks i >= j recomputing P."""
    q, k, v, seg, out, lse = residuals
    num_blocks = q.shape[3] // block
    d_out = d_out.astype(jnp.float32)
    delta = jnp.sum(d_out * out.astype(jnp.float32), axis=-1)  # [B, K, G, T] = rowsum(dO * O)

    def key_block(dq, j):
        k_j, v_j, seg_k = _block(k, j, block, 2), _block(v, j, block, 2), _block(seg, j, block, 1)

        def query_block(i, carry):
            dq, dk_j, dv_j = carry
            q_i, do_i = _block(q, i, block, 3), _block(d_out, i, block, 3)
            s = _block_scores(q_i, k_j, _block(seg, i, block, 1), seg_k, i, j, block)
            p = jnp.exp(s - _block(lse, i, block, 3)[..., None])  # [B, K, G, bq, bk]; 0 where hidden
            dv_j = dv_j + jnp.einsum("bkgqc,bkgqd->bkcd", p, do_i)
            dp = jnp.einsum("bkgqd,bkcd->bkgqc", do_i, v_j, preferred_element_type=jnp.float32)
            ds = p * (dp - _block(delta, i, block, 3)[..., None])
            dk_j = dk_j + jnp.einsum("bkgqc,bkgqd->bkcd", ds, q_i, preferred_element_type=jnp.float32)
            dq_i = jnp.einsum("bkgqc,bkcd->bkgqd", ds, k_j, preferred_element_type=jnp.float32)
            dq = jax.lax.dynamic_update_slice_in_dim(dq, _block(dq, i, block, 3) + dq_i, i * block, axis=3)
            return dq, dk_j, dv_j

        zeros = jnp.zeros(k_j.shape, jnp.float32)
        dq, dk_j, dv_j = jax.lax.fori_loop(j, num_blocks, query_block, (dq, zeros, zeros))
        return dq, (dk_j, dv_j)

    dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros(q.shape, jnp.float32), jnp.arange(num_blocks))
    dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)  # [n, B, K, bk, D] -> [B, K, T, D]
    dv = jnp.moveaxis(dv, 0, 2).reshape(v.shape)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)


# -- splash (TPU Pallas kernel) -------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _splash_kernel(num_heads: int, length: int, block: int, interpret: bool):
    """A causal multi-head splash kernel for `[H, T, D]` queries and `[K, T, D]` keys (built once)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as kernel_lib,
        splash_attention_mask as mask_lib,
    )

    mask = mask_lib.MultiHeadMask([mask_lib.CausalMask((length, length)) for _ in range(num_heads)])
    sizes = kernel_lib.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    with jax.ensure_compile_time_eval():  # the mask tables are constants, not tracers of the first caller
        return kernel_lib.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, segment_ids, *, block_size: int = DEFAULT_BLOCK_SIZE, interpret: bool = False):
    """`causal_attention` through the TPU splash kernel, one example per kernel call.

    Under an ambient mesh (`jax.set_mesh`) whose batch axes split the batch, the per-example kernels
    run inside `jax.shard_map` over those axes (GSPMD cannot partition a Pallas call itself); heads
    and tokens stay whole on each device. T is padded to a multiple of the block. `interpret=True`
    runs the kernel in the Pallas interpreter (any backend; slow, for tests).
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib

    _, t, h, d = q.shape
    block = min(block_size, max(128, -(-t // 128) * 128))  # the kernel tiles by multiples of 128
    padded = -(-t // block) * block
    if padded != t:
        pad = ((0, 0), (0, padded - t), (0, 0), (0, 0))
        q, k, v = jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad)
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, padded - t)))
    kernel = _splash_kernel(h, padded, block, interpret)

    def per_example(q1, k1, v1, seg1):  # [H, T, D], [K, T, D], [K, T, D], [T]
        return kernel(q1, k1, v1, segment_ids=kernel_lib.SegmentIds(q=seg1, kv=seg1))

    run = jax.vmap(per_example)
    mesh = jax.sharding.get_abstract_mesh()
    axes = tuple(a for a in BATCH_AXES if not mesh.empty and a in mesh.axis_names and mesh.shape[a] > 1)
    if axes:
        spec = PartitionSpec(axes)
        run = jax.shard_map(run, mesh=mesh, in_specs=(spec, spec, spec, spec), out_specs=spec, check_vma=False)
    scaled = (q * jnp.asarray(d**-0.5, q.dtype)).swapaxes(1, 2)
    out = run(scaled, k.swapaxes(1, 2), v.swapaxes(1, 2), segment_ids.astype(jnp.int32))
    return out.swapaxes(1, 2)[:, :t].astype(q.dtype)


__all__ = [
    "ATTENTION_BACKENDS",
    "DEFAULT_BLOCK_SIZE",
    "blockwise_attention",
    "causal_attention",
    "resolve_backend",
    "segment_mask",
    "splash_attention",
]
