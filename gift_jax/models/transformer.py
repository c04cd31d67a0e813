"""Decoder-only transformer (Qwen2 / Llama 3 layout) in Flax NNX, with a functional KV cache.

Shapes: B batch, T new tokens, S cache positions, d hidden, H query heads, K kv heads, D head dim,
F MLP width, V vocabulary. Kernels are stored `[in, out]` (torch Linear is `[out, in]`).

Padding is handled by explicit `positions` and an `attention_mask` (1 = real token), so the same
code serves right-padded training batches and left-padded generation batches. Packed training rows
(several examples per row) pass `segment_ids` (0 = padding, one id per example) and per-example
`positions`; attention then stays within each example. Without a cache the attention implementation
is `config.attention` (see `gift_jax.models.attention`). Without a cache a
query attends to earlier keys of the same call; with a cache (`KVCache`, dense: a prefill) the new keys
are written at positions `[cache.index, cache.index + T)` and queries attend to every earlier valid
position. `decode_paged` is one decode step against a paged cache (`gift_jax.models.paged_attention`):
each row attends over its own pages up to its own length.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gift_jax.models.attention import causal_attention
from gift_jax.models.config import ModelConfig
from gift_jax.models.paged_attention import PagedKVCache, paged_decode_attention
from gift_jax.models.rope import apply_rope, inverse_frequencies
from gift_jax.parallel.activations import (
    BATCH,
    EMBED,
    HEADS,
    KV_HEADS,
    LENGTH,
    MLP_WIDTH,
    constrain,
    constrain_batch,
    constrain_stacked_params,
)


class KVCache(NamedTuple):
    """Per-layer keys and values plus which positions hold real tokens (a pytree; jit/donate friendly).

    k, v: tuples of `[B, K, S, D]` per layer; key_mask: `[B, S]` bool; index: next position, `[]` int32
    shared by all rows or `[B]` int32 per row (rows holding sequences of different lengths).
    Heads before slots: each decode step then reads the cache in the layout the attention matmuls
    want (batch dims B, K leading, D contracted last), instead of transposing all of it every step.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    key_mask: jax.Array
    index: jax.Array


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache of `max_len` positions (dtype defaults to the compute dtype)."""
    dtype = dtype or config.jnp_dtype
    shape = (batch, config.num_kv_heads, max_len, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(zeros, zeros, jnp.zeros((batch, max_len), bool), jnp.zeros((), jnp.int32))


class PagedLayer(NamedTuple):
    """One layer's view of a `PagedKVCache` (its pages, and the rows' page table, lengths and backend)."""

    pages: tuple[jax.Array, ...]
    page_table: jax.Array
    lengths: jax.Array
    backend: str


def write_at(buffer: jax.Array, update: jax.Array, index: jax.Array, axis: int) -> jax.Array:
    """`buffer` with `update` written from `index` along `axis`; index `[]` (all rows) or `[B]` (per row).

    Both arrays lead with the batch dimension B. A per-row index writes row b at `index[b]`.
    """
    index = jnp.asarray(index)
    if index.ndim == 0:
        return jax.lax.dynamic_update_slice_in_dim(buffer, update, index, axis)
    return jax.vmap(lambda b, u, i: jax.lax.dynamic_update_slice_in_dim(b, u, i, axis - 1))(buffer, update, index)


class RMSNorm(nnx.Module):
    """HF-exact RMSNorm: normalise in float32, cast back, then scale."""

    def __init__(self, dim: int, eps: float, config: ModelConfig):
        self.weight = nnx.Param(jnp.ones((dim,), config.jnp_param_dtype))
        self.eps = eps
        self.dtype = config.jnp_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(self.dtype) * xf.astype(self.dtype)


def _linear(din: int, dout: int, bias: bool, config: ModelConfig, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        din,
        dout,
        use_bias=bias,
        dtype=config.jnp_dtype,
        param_dtype=config.jnp_param_dtype,
        kernel_init=nnx.initializers.normal(0.02),
        rngs=rngs,
    )


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        d, h, k, hd = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = _linear(d, h * hd, config.qkv_bias, config, rngs)
        self.k_proj = _linear(d, k * hd, config.qkv_bias, config, rngs)
        self.v_proj = _linear(d, k * hd, config.qkv_bias, config, rngs)
        self.o_proj = _linear(h * hd, d, False, config, rngs)
        self.config = config

    def __call__(self, x, positions, mask, inv_freq, cache_kv=None, cache_index=None):
        """x `[B, T, d]`, positions `[B, T]` -> (`[B, T, d]`, new (k, v), or new pages when paged).

        mask: with a dense cache, `[B, 1, T, S]` bool; without one, segment ids `[B, T]` int (0 =
        padding); unused with a `PagedLayer` (T = 1: each row sees its own pages up to its length).
        """
        c = self.config
        b, t, _ = x.shape
        q = constrain(self.q_proj(x).reshape(b, t, c.num_heads, c.head_dim), (BATCH, LENGTH, HEADS, None))
        k = constrain(self.k_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim), (BATCH, LENGTH, KV_HEADS, None))
        v = constrain(self.v_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim), (BATCH, LENGTH, KV_HEADS, None))
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        if cache_kv is None:
            out = causal_attention(q, k, v, mask, backend=c.attention)
        elif isinstance(cache_kv, PagedLayer):
            paged = cache_kv
            out, pages = paged_decode_attention(
                q[:, 0], k[:, 0], v[:, 0], paged.pages, paged.page_table, paged.lengths, paged.backend
            )
            out = out[:, None]
        else:
            k_all, v_all = cache_kv
            k = write_at(k_all, k.swapaxes(1, 2).astype(k_all.dtype), cache_index, axis=2)
            v = write_at(v_all, v.swapaxes(1, 2).astype(v_all.dtype), cache_index, axis=2)
            out = _cached_attention(q, k, v, mask)
        out = constrain(out.reshape(b, t, c.num_heads * c.head_dim), (BATCH, LENGTH, HEADS))
        new = pages if isinstance(cache_kv, PagedLayer) else (k, v)
        return constrain(self.o_proj(out), (BATCH, LENGTH, EMBED)), new


def _cached_attention(q, k, v, mask):
    """Grouped-query attention of q `[B, T, H, D]` over cache k, v `[B, K, S, D]`; mask `[B, 1, T, S]`.

    Softmax in float32; returns `[B, T, H, D]` in q's dtype.
    """
    b, t, h, d = q.shape
    kv_heads, slots = k.shape[1], k.shape[2]
    groups = h // kv_heads
    q = q.reshape(b, t, kv_heads, groups, d).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, groups * t, d)
    # The cache as the left operand ("bksd,bkmd->bksm"): the form XLA:CPU runs straight from the
    # [S, D] cache rows. Written the other way round it transposed the whole cache in every layer of
    # every decode step (scores 2.3x slower at S = 2048). GPU / TPU compilers pick their own layouts.
    scores = jax.lax.dot_general(
        k.astype(q.dtype), q, (((3,), (3,)), ((0, 1), (0, 1))), preferred_element_type=jnp.float32
    )  # [B, K, S, G*T]
    scores = scores.reshape(b, kv_heads, slots, groups, t).transpose(0, 1, 3, 4, 2)  # [B, K, G, T, S]
    scores = jnp.where(mask[:, :, None], scores * (d**-0.5), -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v.astype(q.dtype))
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = _linear(d, f, False, config, rngs)
        self.up_proj = _linear(d, f, False, config, rngs)
        self.down_proj = _linear(f, d, False, config, rngs)

    def __call__(self, x):
        gate = constrain(self.gate_proj(x), (BATCH, LENGTH, MLP_WIDTH))
        up = constrain(self.up_proj(x), (BATCH, LENGTH, MLP_WIDTH))
        return constrain(self.down_proj(jax.nn.silu(gate) * up), (BATCH, LENGTH, EMBED))


class DecoderLayer(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, config)
        self.self_attn = Attention(config, rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, config)
        self.mlp = MLP(config, rngs)

    def __call__(self, x, positions, mask, inv_freq, cache_kv=None, cache_index=None):
        attn, new_kv = self.self_attn(self.input_layernorm(x), positions, mask, inv_freq, cache_kv, cache_index)
        x = constrain(x + attn, (BATCH, LENGTH, EMBED))
        return constrain(x + self.mlp(self.post_attention_layernorm(x)), (BATCH, LENGTH, EMBED)), new_kv


def _run_layer(layer, x, positions, mask, inv_freq, cache_kv, cache_index):
    return layer(x, positions, mask, inv_freq, cache_kv, cache_index)


def _run_layer_remat(layer, x, positions, mask, inv_freq, cache_kv, cache_index):
    """`_run_layer` under `jax.checkpoint`: the backward pass recomputes the layer's activations.

    The layer is split into (graphdef, state) so the checkpointed function is pure JAX; this works
    under plain `jax.jit` / `jax.grad` as well as nnx transforms. Used only without a cache (training).
    """
    graphdef, state = nnx.split(layer)

    @jax.checkpoint
    def pure(state, x, positions, mask):
        return nnx.merge(graphdef, state)(x, positions, mask, inv_freq, cache_kv, cache_index)

    return pure(state, x, positions, mask)


class Transformer(nnx.Module):
    """The causal LM. `model(input_ids)` -> logits `[B, T, V]` (float32)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed_tokens = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            dtype=config.jnp_dtype,
            param_dtype=config.jnp_param_dtype,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.layers = nnx.List([DecoderLayer(config, rngs) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config)
        if not config.tie_word_embeddings:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, False, config, rngs)

    # -- public API -------------------------------------------------------------------------------
    def __call__(self, input_ids, positions=None, attention_mask=None, segment_ids=None):
        """input_ids `[B, T]` int -> logits `[B, T, V]` float32."""
        return self.logits_from_hidden(self.hidden_states(input_ids, positions, attention_mask, segment_ids))

    def hidden_states(self, input_ids, positions=None, attention_mask=None, segment_ids=None):
        """Final (normed) hidden states `[B, T, d]`, i.e. everything but the output projection.

        segment_ids `[B, T]` int (packed rows: 0 = padding, one id per example; pass per-example
        `positions` with them); default: the attention mask as one segment per row.
        """
        hidden, _ = self._forward(input_ids, positions, attention_mask, None, segment_ids)
        return hidden

    def decode(self, input_ids, cache: KVCache, positions=None, attention_mask=None):
        """Prefill (T > 1) or decode step (T = 1) against a dense `cache` -> (logits `[B, T, V]`, new cache)."""
        hidden, cache = self._forward(input_ids, positions, attention_mask, cache)
        return self.logits_from_hidden(hidden), cache

    def decode_paged(self, tokens: jax.Array, cache: PagedKVCache) -> tuple[jax.Array, PagedKVCache]:
        """One decode step against a paged cache: tokens `[B]` int -> (logits `[B, V]` float32, cache).

        Row b's token sits at position `cache.lengths[b]` (its key and value are written there) and
        attends over the row's positions `[0, lengths[b]]`; the returned cache counts one more token
        per row (the caller resets rows that hold nothing).
        """
        c = self.config
        positions = cache.lengths[:, None]
        inv_freq = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        x = constrain(self.embed_tokens(tokens[:, None]), (BATCH, LENGTH, EMBED))
        pages = []
        for layer, layer_pages in zip(self.layers, cache.pages, strict=True):
            paged = PagedLayer(layer_pages, cache.page_table, cache.lengths, cache.backend)
            x, new_pages = layer(x, positions, None, inv_freq, paged)
            pages.append(new_pages)
        hidden = constrain(self.norm(x), (BATCH, LENGTH, EMBED))
        return self.logits_from_hidden(hidden)[:, 0], cache.replace(pages=tuple(pages), lengths=cache.lengths + 1)

    def output_projection(self) -> jax.Array:
        """The `[d, V]` matrix mapping final hidden states to logits (tied embeddings transposed)."""
        if self.config.tie_word_embeddings:
            return self.embed_tokens.embedding[...].T
        return self.lm_head.kernel[...]

    def logits_from_hidden(self, hidden):
        """`[B, T, d]` -> float32 logits `[B, T, V]` (matmul in the compute dtype, f32 accumulate)."""
        w = self.output_projection().astype(self.config.jnp_dtype)
        return jnp.dot(hidden.astype(self.config.jnp_dtype), w, preferred_element_type=jnp.float32)

    # -- internals --------------------------------------------------------------------------------
    def _forward(self, input_ids, positions, attention_mask, cache, segment_ids=None):
        c = self.config
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), bool) if segment_ids is None else segment_ids != 0
        attention_mask = attention_mask.astype(bool)
        if positions is None:
            # Real tokens are numbered 0, 1, ... whatever the padding side; pads get 0.
            offset = 0 if cache is None else jnp.sum(cache.key_mask, axis=1, keepdims=True)
            positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1 + offset, 0)
        if cache is None:  # the attention backend masks by segment, block by block
            mask = attention_mask.astype(jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
            cache_index = None
        else:
            mask, cache_index = self._attention_mask(attention_mask, cache)
        inv_freq = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        if cache is None:
            mask = constrain_batch(mask)
        x = constrain(self.embed_tokens(input_ids), (BATCH, LENGTH, EMBED))
        if cache is None and c.scan_layers:
            return constrain(
                self.norm(self._scanned_layers(x, positions, mask, inv_freq)), (BATCH, LENGTH, EMBED)
            ), None
        new_k, new_v = [], []
        run = _run_layer_remat if (c.remat and cache is None) else _run_layer
        for i, layer in enumerate(self.layers):
            cache_kv = None if cache is None else (cache.k[i], cache.v[i])
            x, (k, v) = run(layer, x, positions, mask, inv_freq, cache_kv, cache_index)
            new_k.append(k)
            new_v.append(v)
        hidden = constrain(self.norm(x), (BATCH, LENGTH, EMBED))
        if cache is None:
            return hidden, None
        key_mask = write_at(cache.key_mask, attention_mask, cache_index, axis=1)
        return hidden, KVCache(tuple(new_k), tuple(new_v), key_mask, cache_index + t)

    def _scanned_layers(self, x, positions, mask, inv_freq):
        """The decoder layers as one `lax.scan` over their weights stacked `[L, ...]` (no cache).

        The weights are cast to the compute dtype before stacking (every layer casts them on use
        anyway, so values and gradients are those of the layer loop) and keep their FSDP sharding
        behind the new leading axis. Under remat the body is checkpointed: the backward scan
        recomputes one layer per iteration, so only the `[B, T, d]` layer inputs stay live.
        """
        graphdef = nnx.graphdef(self.layers[0])
        dtype = self.config.jnp_dtype
        layer_states = [nnx.state(layer) for layer in self.layers]
        stacked = jax.tree.map(lambda *ws: jnp.stack([w.astype(dtype) for w in ws]), *layer_states)
        stacked = constrain_stacked_params(stacked)

        def body(h, state):
            out, _ = nnx.merge(graphdef, state)(h, positions, mask, inv_freq)
            return out, None

        if self.config.remat:
            body = jax.checkpoint(body, prevent_cse=False)  # a scan body cannot be CSE'd with its recompute
        x, _ = jax.lax.scan(body, x, stacked)
        return x

    @staticmethod
    def _attention_mask(attention_mask, cache):
        """Boolean `[B, 1, T, S]` against the cache: causal, padding keys hidden, every query sees itself.

        Letting a padding query see itself keeps its softmax finite (its output is never used).
        """
        index = cache.index
        q_slot = index[..., None] + jnp.arange(attention_mask.shape[1])  # [T], or [B, T] with a per-row index
        k_slot = jnp.arange(cache.key_mask.shape[1])
        key_valid = write_at(cache.key_mask, attention_mask, index, axis=1)
        causal = k_slot <= q_slot[..., None]  # [T, S] or [B, T, S]
        itself = k_slot == q_slot[..., None]
        mask = causal & (key_valid[:, None, :] | itself)  # [B, T, S]
        return mask[:, None], index
