"""A paged KV cache and ragged decode attention: each row attends over its own pages only.

The cache of a decode batch is a pool of pages of `page_size` positions per layer; row b's tokens sit
in the pages `page_table[b, 0], page_table[b, 1], ...` (position t at page `t // page_size`, offset
`t % page_size`), and `lengths[b]` counts the tokens it holds. Pages are handed out by the caller
(`gift_jax.rollout.pages`) as rows grow and taken back when they stop, so the cache holds the tokens
actually there, not `rows x max_len`; and a decode step's attention reads each row's own pages up to
its own length, so a step costs the sum of the rows' lengths, not rows x the longest.

Page 0 of every device's pool is scratch: rows that hold nothing (idle slots) point there, write
their throw-away keys there and attend over that one position; their outputs are never used.

Backends (`PagedKVCache.backend`, chosen by `backend_for(platform)`):
- `xla`: pure JAX, any platform (the CPU path and the reference). The (row, chunk) pairs that hold
  tokens form a flat work list, B of them per loop iteration; each gathers its chunk of pages, and
  an online softmax (running maximum, normaliser and output per row, combined with segment sums)
  folds the chunks of a row together. The loop runs `ceil(sum of chunks / B)` iterations: ragged
  by construction. Keys and values in two arrays `[K, pages, page_size, D]`.
- `gpu`: `jax.experimental.pallas.ops.gpu.paged_attention`, the same layout as `xla`.
- `tpu`: `jax.experimental.pallas.ops.tpu.ragged_paged_attention`: keys and values interleaved on
  the head axis of one array, `[pages, page_size, 2K, D]`.

On a mesh (the ambient one of `gift_jax.parallel.activation_sharding`) the rows and each device's
pool are split over the batch axes and the kv heads over `tensor` (when they divide), and the
write + attention run per device under `jax.shard_map`: a row's page indices count within its own
device's pool, so no page ever crosses devices.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import paged_attention as gpu_paged
from jax.experimental.pallas.ops.tpu import ragged_paged_attention as tpu_ragged
from jax.sharding import PartitionSpec as P

from gift_jax.models.config import ModelConfig
from gift_jax.parallel.mesh import BATCH_AXES

BACKENDS = ("xla", "tpu", "gpu")
_BY_PLATFORM = {"tpu": "tpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu"}
CHUNK_TOKENS = 256  # positions one work item of the `xla` path reads (a whole number of pages)
SCRATCH_PAGE = 0


def backend_for(platform: str | None = None) -> str:
    """The paged attention backend of a platform (default: `jax.default_backend()`)."""
    return _BY_PLATFORM.get(platform or jax.default_backend(), "xla")


def page_arrays(config: ModelConfig, num_pages: int, page_size: int, dtype, backend: str) -> tuple[jax.Array, ...]:
    """One layer's empty pool in `backend`'s layout: `tpu`: `([P, page, 2K, D],)` (keys and values
    interleaved on the head axis); `gpu` and `xla`: `([K, P, page, D],) * 2`."""
    k, d = config.num_kv_heads, config.head_dim
    if backend == "tpu":
        return (jnp.zeros((num_pages, page_size, 2 * k, d), dtype),)
    return (jnp.zeros((k, num_pages, page_size, d), dtype), jnp.zeros((k, num_pages, page_size, d), dtype))


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["pages", "page_table", "lengths"], meta_fields=["backend"]
)
@dataclasses.dataclass(frozen=True)
class PagedKVCache:
    """A decode batch's paged cache (a pytree; `backend` is static).

    pages: per layer, the pool in the backend's layout (`page_arrays`). page_table: `[B, pages per
    row]` int32, page indices within the row's device's pool (unused entries: `SCRATCH_PAGE`).
    lengths: `[B]` int32, tokens each row holds (the next one is written at that position).
    """

    pages: tuple[tuple[jax.Array, ...], ...]
    page_table: jax.Array
    lengths: jax.Array
    backend: str = "xla"

    @property
    def page_size(self) -> int:
        return self.pages[0][0].shape[1 if self.backend == "tpu" else 2]

    @property
    def kv_heads(self) -> int:
        layer = self.pages[0][0]
        return layer.shape[2] // 2 if self.backend == "tpu" else layer.shape[0]

    def replace(self, **changes) -> PagedKVCache:
        return dataclasses.replace(self, **changes)


def init_paged_cache(
    config: ModelConfig, rows: int, num_pages: int, page_size: int, pages_per_row: int, *, dtype=None, backend="xla"
) -> PagedKVCache:
    """An empty cache: `num_pages` pages (over all devices) of `page_size` positions, every row on scratch."""
    if backend not in BACKENDS:
        raise ValueError(f"paged attention backend {backend!r}; expected one of {BACKENDS}")
    dtype = dtype or config.jnp_dtype
    return PagedKVCache(
        pages=tuple(page_arrays(config, num_pages, page_size, dtype, backend) for _ in range(config.num_layers)),
        page_table=jnp.full((rows, pages_per_row), SCRATCH_PAGE, jnp.int32),
        lengths=jnp.zeros((rows,), jnp.int32),
        backend=backend,
    )


# -- writing ---------------------------------------------------------------------------------------
def _write(layer: tuple[jax.Array, ...], backend: str, pages: jax.Array, offsets: jax.Array, k, v):
    """`layer` with keys / values `[N, K, D]` written at (page, offset) `[N]` (pages past the pool dropped)."""
    if backend == "tpu":
        (kv_pages,) = layer
        interleaved = jnp.stack([k, v], axis=2).reshape(k.shape[0], 2 * k.shape[1], k.shape[2])  # k0 v0 k1 v1 ...
        return (kv_pages.at[pages, offsets].set(interleaved.astype(kv_pages.dtype), mode="drop"),)
    k_pages, v_pages = layer
    return (
        k_pages.at[:, pages, offsets].set(k.swapaxes(0, 1).astype(k_pages.dtype), mode="drop"),
        v_pages.at[:, pages, offsets].set(v.swapaxes(0, 1).astype(v_pages.dtype), mode="drop"),
    )


def _read(layer: tuple[jax.Array, ...], backend: str, pages: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values of `pages` `[N, n]`, each `[N, n, K, page_size, D]` (the `xla` path's gather).

    From the split layout `[K, P, page, D]` this is XLA's own gather order (the indices' dims first,
    each page's `[page, D]` block copied whole), which the attention's batched matmuls take as it
    comes (batch dims N, n, K leading): no transpose of the gathered keys. The interleaved layout is
    read for tests only."""
    if backend == "tpu":
        (kv_pages,) = layer
        kv = kv_pages[pages].swapaxes(2, 3)  # [N, n, 2K, page, D]
        return kv[:, :, 0::2], kv[:, :, 1::2]
    k_pages, v_pages = layer
    return k_pages[:, pages].transpose(1, 2, 0, 3, 4), v_pages[:, pages].transpose(1, 2, 0, 3, 4)


# -- attention -------------------------------------------------------------------------------------
def ragged_attention_xla(
    q: jax.Array, layer: tuple[jax.Array, ...], page_table: jax.Array, kv_lens: jax.Array, backend: str = "xla"
) -> jax.Array:
    """Decode attention of q `[B, H, D]` over each row's first `kv_lens[b]` cached positions (pure JAX).

    Work items are (row, chunk of `CHUNK_TOKENS` positions); B of them per loop iteration, only as
    many iterations as the rows' chunks need. Softmax statistics in float32; returns `[B, H, D]`.
    """
    b, h, d = q.shape
    page_size = layer[0].shape[1 if backend == "tpu" else 2]
    kv_heads = layer[0].shape[2] // 2 if backend == "tpu" else layer[0].shape[0]
    groups = h // kv_heads
    chunk_pages = max(1, CHUNK_TOKENS // page_size)
    chunk = chunk_pages * page_size
    table = jnp.pad(page_table, ((0, 0), (0, -page_table.shape[1] % chunk_pages)))  # whole chunks
    q = (q * d**-0.5).reshape(b, kv_heads, groups, d)
    chunks = (kv_lens + chunk - 1) // chunk  # [B]
    ends = jnp.cumsum(chunks)
    starts = ends - chunks
    items = b  # work items per iteration
    batch = ((0, 1, 2), (0, 1, 2))  # (item, page of the chunk, kv head) on both sides

    def visit(i, carry):
        running_max, normaliser, acc = carry  # [B, K, G], [B, K, G], [B, K, G, D]
        item = i * items + jnp.arange(items)
        valid = item < ends[-1]
        row = jnp.minimum(jnp.searchsorted(ends, item, side="right"), b - 1)
        first = (item - starts[row]) * chunk_pages  # first page (in the row's table) of the item's chunk
        pages = jax.vmap(lambda r, f: jax.lax.dynamic_slice_in_dim(table[r], f, chunk_pages))(row, first)
        # Materialised first: fused into the gather, XLA:CPU recomputed the page of every element (15x slower).
        pages = jax.lax.optimization_barrier(pages)
        k, v = _read(layer, backend, pages)  # [W, n, K, page, D]
        queries = jnp.broadcast_to(q[row][:, None], (items, chunk_pages, kv_heads, groups, d)).astype(k.dtype)
        scores = jax.lax.dot_general(k, queries, (((4,), (4,)), batch), preferred_element_type=jnp.float32)
        position = (first[:, None] + jnp.arange(chunk_pages))[:, :, None] * page_size + jnp.arange(page_size)
        visible = valid[:, None, None] & (position < kv_lens[row][:, None, None])  # [W, n, page]
        scores = jnp.where(visible[:, :, None, :, None], scores, -jnp.inf)  # [W, n, K, page, G]
        item_max = jnp.max(scores, axis=(1, 3))  # [W, K, G]
        new_max = jnp.maximum(running_max, jax.ops.segment_max(item_max, row, b, indices_are_sorted=True))
        # A row with nothing visible yet keeps -inf: shift by 0 there so exp gives 0, not nan.
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        probs = jnp.exp(scores - shift[row][:, None, :, None, :])
        item_acc = jax.lax.dot_general(
            probs.astype(v.dtype), v, (((3,), (3,)), batch), preferred_element_type=jnp.float32
        )  # [W, n, K, G, D]
        rescale = jnp.exp(running_max - shift)
        item_sum = jnp.sum(probs, axis=(1, 3))
        normaliser = normaliser * rescale + jax.ops.segment_sum(item_sum, row, b, indices_are_sorted=True)
        acc = acc * rescale[..., None] + jax.ops.segment_sum(item_acc.sum(1), row, b, indices_are_sorted=True)
        return new_max, normaliser, acc

    stats = (b, kv_heads, groups)
    start = (jnp.full(stats, -jnp.inf), jnp.zeros(stats), jnp.zeros((*stats, d)))
    iterations = (ends[-1] + items - 1) // items
    _, normaliser, acc = jax.lax.fori_loop(0, iterations, visit, start)
    return (acc / normaliser[..., None]).reshape(b, h, d)  # every row sees >= 1 position: normaliser > 0


def attend_pages(q, layer, page_table, kv_lens, backend: str) -> jax.Array:
    """q `[B, H, D]` -> `[B, H, D]` in q's dtype, over the first `kv_lens[b]` positions of row b's pages.

    The GPU kernel asked for on a CPU host runs in Pallas interpret mode (its parity tests); the TPU
    kernel does not run in either interpret mode of jax 0.10.2, so it is only compiled (TPU targets).
    """
    d = q.shape[-1]
    if backend == "tpu":
        b = q.shape[0]
        page_size, pages_per_row = layer[0].shape[1], page_table.shape[1]
        out = tpu_ragged.ragged_paged_attention(
            q,
            layer[0],
            kv_lens,
            page_table,
            jnp.arange(b + 1, dtype=jnp.int32),  # one query per row
            jnp.array([b], jnp.int32),
            sm_scale=d**-0.5,
            # Explicit block sizes: the kernel's tuned table asks the attached device for its TPU
            # version, which a compile-only host does not have.
            num_kv_pages_per_block=min(pages_per_row, max(1, 512 // page_size)),
            num_queries_per_block=min(b, 32),
        )
        return out.astype(q.dtype)
    if backend == "gpu":
        # The kernel splits each row's pages into k_splits x whole compute blocks: pad the table with
        # scratch pages (past every row's length, so never attended).
        per_block = min(8, page_table.shape[1])
        splits = max(1, min(16, page_table.shape[1] // per_block))
        page_table = jnp.pad(page_table, ((0, 0), (0, -page_table.shape[1] % (splits * per_block))))
        out = gpu_paged.paged_attention(
            q * jnp.asarray(d**-0.5, q.dtype),
            *layer,
            page_table,
            kv_lens,
            pages_per_compute_block=per_block,
            k_splits=splits,
            interpret=jax.default_backend() == "cpu",
        )
        return out.astype(q.dtype)
    return ragged_attention_xla(q, layer, page_table, kv_lens, backend).astype(q.dtype)


def _write_and_attend(q, k, v, layer, page_table, lengths, backend: str):
    """Writes each row's new key / value at position `lengths[b]`, then attends over `lengths + 1`."""
    page_size = layer[0].shape[1 if backend == "tpu" else 2]
    page = jnp.take_along_axis(page_table, (lengths // page_size)[:, None], axis=1)[:, 0]
    layer = _write(layer, backend, page, lengths % page_size, k, v)
    return attend_pages(q, layer, page_table, lengths + 1, backend), layer


def pool_specs(backend: str, mesh, kv_heads: int) -> tuple[P, ...]:
    """PartitionSpecs of one layer's page arrays on `mesh`: as the per-device write and attention use them."""
    return _pool_spec(backend, *_split(mesh, kv_heads))


def _split(mesh, kv_heads: int) -> tuple[tuple[str, ...] | None, str | None]:
    """(batch axes the rows and pools are split over, the axis the kv heads are split over) on `mesh`."""
    tensor = mesh.shape.get("tensor", 1)
    heads = "tensor" if tensor > 1 and kv_heads % tensor == 0 else None
    rows = tuple(a for a in BATCH_AXES if mesh.shape.get(a, 1) > 1) or None
    return rows, heads


def _pool_spec(backend: str, rows, heads) -> tuple[P, ...]:
    return (P(rows, None, heads, None),) if backend == "tpu" else (P(heads, rows, None, None),) * 2


def paged_decode_attention(q, k, v, cache_layer: tuple[jax.Array, ...], page_table, lengths, backend: str):
    """One decode step of one layer: q `[B, H, D]`, new k / v `[B, K, D]` -> (`[B, H, D]`, the layer's pages).

    On a mesh (`jax.sharding.get_abstract_mesh()`) it runs per device under `jax.shard_map`: rows and
    pools over the batch axes, heads over `tensor` when it divides the kv heads.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return _write_and_attend(q, k, v, cache_layer, page_table, lengths, backend)
    rows, heads = _split(mesh, k.shape[1])
    pool, per_row = _pool_spec(backend, rows, heads), P(rows, heads, None)
    local = jax.shard_map(
        functools.partial(_write_and_attend, backend=backend),
        mesh=mesh,
        in_specs=(per_row, per_row, per_row, pool, P(rows, None), P(rows)),
        out_specs=(per_row, pool),
        check_vma=False,
    )
    return local(q, k, v, cache_layer, page_table, lengths)


def _per_device(cache: PagedKVCache, layer_fn, extra_specs: tuple, kv_heads: int):
    """`layer_fn(layer, *args)` on each device's own pool (`shard_map` over the ambient mesh, if any):
    pages are indices within a device's pool, so each device applies only the entries addressed to it
    (`layer_fn` gets `device`, this device's index over the batch axes)."""
    mesh = jax.sharding.get_abstract_mesh()
    rows, heads = _split(mesh, kv_heads) if not mesh.empty else (None, None)
    if rows is None and heads is None:
        return functools.partial(layer_fn, device=0)

    def local(layer, *args):
        return layer_fn(layer, *args, device=0 if rows is None else jax.lax.axis_index(rows))

    pool = _pool_spec(cache.backend, rows, heads)
    specs = tuple(P(None, heads, None, None) if spec == "heads" else P() for spec in extra_specs)
    return jax.shard_map(local, mesh=mesh, in_specs=(pool, *specs), out_specs=pool, check_vma=False)


def write_prefill(
    cache: PagedKVCache,
    k: tuple[jax.Array, ...],
    v: tuple[jax.Array, ...],
    source: jax.Array,
    device: jax.Array,
    page_table: jax.Array,
    lengths: jax.Array,
) -> PagedKVCache:
    """Copies prefilled keys / values into pages.

    k, v: per layer `[U, K, W, D]` (a dense prefill of U prompts). Per write entry `[E]`: source, which
    prompt; device, whose pool (out of range: padding, dropped); page_table `[E, n]`, the pages for
    positions `[0, n * page_size)` (indices within that device's pool); lengths, how many positions to
    copy (the rest of the last page is written over by decode steps).
    """
    page_size, width = cache.page_size, k[0].shape[2]

    def layer_write(layer, k_layer, v_layer, source, target, page_table, lengths, *, device):
        position = jnp.arange(width)
        in_table = jnp.minimum(position // page_size, page_table.shape[1] - 1)
        # Past the pool: dropped (a negative index would wrap around to the last page).
        outside = layer[0].shape[0 if cache.backend == "tpu" else 1]
        keep = (target == device)[:, None] & (position[None, :] < lengths[:, None])
        pages = jnp.where(keep, page_table[:, in_table], outside).reshape(-1)  # [E * W]
        offsets = jnp.tile(position % page_size, source.shape[0])

        def flat(x):  # [U, K, W, D] -> the entries' positions [E * W, K, D]
            return x[source].transpose(0, 2, 1, 3).reshape(-1, x.shape[1], x.shape[3])

        return _write(layer, cache.backend, pages, offsets, flat(k_layer), flat(v_layer))

    write = _per_device(cache, layer_write, ("heads", "heads", None, None, None, None), cache.kv_heads)
    pages = tuple(
        write(layer, k_layer, v_layer, source, device, page_table, lengths)
        for layer, k_layer, v_layer in zip(cache.pages, k, v, strict=True)
    )
    return cache.replace(pages=pages)


def copy_pages(cache: PagedKVCache, device: jax.Array, source: jax.Array, target: jax.Array) -> PagedKVCache:
    """Page `source[c]` copied onto page `target[c]` of device `device[c]`'s pool, per entry `[C]`
    (a shared prompt page copied for the row that writes into it; out-of-range devices: padding)."""
    axis = 0 if cache.backend == "tpu" else 1

    def layer_copy(layer, owner, source, target, *, device):
        target = jnp.where(owner == device, target, layer[0].shape[axis])  # past the pool: dropped
        if axis == 0:
            return tuple(x.at[target].set(x[source], mode="drop") for x in layer)
        return tuple(x.at[:, target].set(x[:, source], mode="drop") for x in layer)

    copy = _per_device(cache, layer_copy, (None, None, None), cache.kv_heads)
    return cache.replace(pages=tuple(copy(layer, device, source, target) for layer in cache.pages))
