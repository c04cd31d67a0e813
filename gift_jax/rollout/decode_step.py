"""The decode step: one state and one step function, shared by the engine's loop and the static
reference (the shape of gemma's sampler: a `_SamplingState` and one `_sample_step`).

`DecodeState` holds S slots (decode rows) and the outputs of R request rows. A slot carries the row it
fills (`row`, R when idle), the token it runs next (`feed`), its base key, how many tokens its row has
generated and may generate, and whether it is alive. `decode_step` runs every slot through the model
once, draws each live row's next token and writes it straight into the row's outputs (indexed by
request row, never by slot, so nothing is gathered when a row ends and the result comes back in
request order); a row that draws a stop token or reaches its budget leaves its slot idle.

A row's cache is paged (`models.paged_attention`): position t of its sequence (prompt tokens at
`[0, p - 1)`, the last prompt token fed by the first decode step, generated tokens after) lies in page
`page_table[slot, t // page_size]`, handed out by the host (`pages`, `admission`); the cache's
`lengths[slot]` counts its positions. Each row's draws are keyed by (prompt, sample, position)
(`token_sampling.row_keys`), so which slot a row decodes in, and when, never changes its samples.

- `insert` prefills a few prompts once each, writes their prefixes into pages (the samples of a
  prompt share its whole pages and copy its last, partial one) and places new rows in free slots;
- `schedule` takes the host's page table and the slots it preempts;
- `decode_steps` runs K steps (the engine, between scheduling rounds); `decode_until_done` runs
  until every slot is idle (the static reference);
- `shrink` moves the slots into fewer (the engine's tail).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from gift_jax.models import ModelConfig, Transformer, init_cache
from gift_jax.models.paged_attention import SCRATCH_PAGE, PagedKVCache, copy_pages, init_paged_cache, write_prefill
from gift_jax.parallel import logical_to_spec
from gift_jax.rollout.token_sampling import TokenRule, choose_tokens, position_keys
from gift_jax.rollout.types import StopRule, constrain_cache


@dataclasses.dataclass(frozen=True)
class EngineShape:
    """Static sizes of one rollout (hashable: a static jit argument).

    slots: decode rows S. rows: request rows R (prompts x samples, bucketed). max_new_bucket: width of
    the output buffers. page_size: positions per page; pages_per_slot: the page table's width (a
    row's prompt bucket + generation bucket); pages: the pool over all devices (scratch pages
    included). cache_dtype: None = the model's compute dtype, or e.g. "bfloat16". backend: the paged
    attention's (`models.paged_attention.BACKENDS`).
    """

    slots: int
    rows: int
    max_new_bucket: int
    page_size: int
    pages_per_slot: int
    pages: int
    cache_dtype: str | None = None
    backend: str = "xla"


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "cache",
        "feed",
        "keys",
        "row",
        "count",
        "budget",
        "alive",
        "tokens",
        "logprobs",
        "entropies",
        "lengths",
        "stopped",
        "busy_slot_steps",
    ],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class DecodeState:
    """Device state of a rollout (S slots, R request rows, N_b bucketed generation length).

    cache: the paged KV cache (`PagedKVCache`: pages, `[S, pages per slot]` table, `[S]` lengths).
    Per slot `[S]`: feed int32 (the token it runs next),
    keys (its row's base key), row int32 (the request row it fills; R when idle), count int32 (tokens
    its row has generated), budget int32, alive bool. Per request row: tokens `[R, N_b]` int32,
    logprobs / entropies `[R, N_b]` float32, lengths `[R]` int32, stopped `[R]` bool.
    busy_slot_steps `[]` int32: live slots summed over decode steps (occupancy = busy / slot-steps).
    """

    cache: PagedKVCache
    feed: jax.Array
    keys: jax.Array
    row: jax.Array
    count: jax.Array
    budget: jax.Array
    alive: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    entropies: jax.Array
    lengths: jax.Array
    stopped: jax.Array
    busy_slot_steps: jax.Array

    def replace(self, **changes) -> DecodeState:
        return dataclasses.replace(self, **changes)


SLOT_FIELDS = ("feed", "keys", "row", "count", "budget", "alive")  # the per-slot vectors besides the cache


def init_state(model_config: ModelConfig, shape: EngineShape, pad_id: int, mesh: Mesh | None = None) -> DecodeState:
    """Idle slots, an empty pool and empty outputs (call under jit so the cache is created on device)."""
    s, r = shape.slots, shape.rows
    cache = init_paged_cache(
        model_config,
        s,
        shape.pages,
        shape.page_size,
        shape.pages_per_slot,
        dtype=shape.cache_dtype and jnp.dtype(shape.cache_dtype),
        backend=shape.backend,
    )
    if mesh is not None:
        cache = constrain_cache(cache, mesh)
    return DecodeState(
        cache=cache,
        feed=jnp.full((s,), pad_id, jnp.int32),
        keys=jax.random.split(jax.random.key(0), s),
        row=jnp.full((s,), r, jnp.int32),
        count=jnp.zeros((s,), jnp.int32),
        budget=jnp.zeros((s,), jnp.int32),
        alive=jnp.zeros((s,), bool),
        tokens=jnp.full((r, shape.max_new_bucket), pad_id, jnp.int32),
        logprobs=jnp.zeros((r, shape.max_new_bucket), jnp.float32),
        entropies=jnp.zeros((r, shape.max_new_bucket), jnp.float32),
        lengths=jnp.zeros((r,), jnp.int32),
        stopped=jnp.zeros((r,), bool),
        busy_slot_steps=jnp.zeros((), jnp.int32),
    )


def insert(model: Transformer, state: DecodeState, batch, table: jax.Array, pad_id: int = 0) -> DecodeState:
    """Prefills U prompts once, writes their prefixes into pages, and places M new rows in free slots.

    Args:
      model: the policy (decoding copy).
      state: the rollout state.
      batch: a `programs.InsertBatch` (built by `admission.Admission`): the prompts' prefixes
        `[U, W]` (each prompt but its last token, right-padded), the page writes of the prefill
        (`models.paged_attention.write_prefill`), the page copies of shared prompt pages
        (`copy_pages`: a row's own copy of its prompt's partial last page), and per new row its slot
        (S: padding, dropped), its prefix length, its prompt's last token (fed by its first decode
        step), its base key, request row (R: padding) and budget.
      table: `[S, pages per slot]` int32, the host's page table (`pages.PagePool.table`), the new
        rows' pages included.
      pad_id: the new rows' outputs start as padding (a row redone after preemption starts afresh).
    """
    cache = state.cache
    prefill = init_cache(model.config, *batch.prefix_ids.shape, dtype=cache.pages[0][0].dtype)
    _, prefill = model.decode(batch.prefix_ids, prefill, attention_mask=batch.prefix_mask)
    cache = write_prefill(
        cache, prefill.k, prefill.v, batch.write_source, batch.write_device, batch.write_table, batch.write_length
    )
    cache = copy_pages(cache, batch.copy_device, batch.copy_source, batch.copy_target)
    slot, row = batch.slot, batch.row
    cache = cache.replace(page_table=table, lengths=cache.lengths.at[slot].set(batch.length, mode="drop"))

    def put(x, values):
        return x.at[slot].set(values, mode="drop")

    def clear(x, value):  # a row restarted after preemption writes its outputs afresh
        return x.at[row].set(value, mode="drop")

    return state.replace(
        cache=cache,
        feed=put(state.feed, batch.last_token),
        keys=put(state.keys, batch.keys),
        row=put(state.row, row),
        count=put(state.count, jnp.zeros_like(row)),
        budget=put(state.budget, batch.budget),
        alive=put(state.alive, batch.budget > 0),
        tokens=clear(state.tokens, pad_id),
        logprobs=clear(state.logprobs, 0.0),
        entropies=clear(state.entropies, 0.0),
    )


def decode_step(model: Transformer, state: DecodeState, token_rule: TokenRule, stop_rule: StopRule) -> DecodeState:
    """One token for every live slot; rows that stop or reach their budget leave their slot idle.

    An idle slot holds no token (length 0) and its page-table row points at scratch: it writes there,
    never into pages a live row (or a row sharing its prompt pages) still reads.
    """
    num_rows = state.lengths.shape[0]
    alive = state.alive
    logits, cache = model.decode_paged(state.feed, state.cache)
    choice = choose_tokens(logits, position_keys(state.keys, state.count), token_rule)
    tokens = jnp.where(alive, choice.tokens, stop_rule.pad_id)
    out_row = jnp.where(alive, state.row, num_rows)  # idle slots write out of range: dropped
    hit_stop = alive & stop_rule.hits(tokens)
    count = state.count + alive.astype(jnp.int32)
    live = alive & ~(hit_stop | (count >= state.budget))
    cache = cache.replace(
        lengths=jnp.where(live, cache.lengths, 0),
        page_table=jnp.where(live[:, None], cache.page_table, SCRATCH_PAGE),
    )
    return state.replace(
        cache=cache,
        feed=tokens,
        count=count,
        alive=live,
        row=jnp.where(live, state.row, num_rows),
        tokens=state.tokens.at[out_row, state.count].set(tokens, mode="drop"),
        logprobs=state.logprobs.at[out_row, state.count].set(choice.logprobs, mode="drop"),
        entropies=state.entropies.at[out_row, state.count].set(choice.entropies, mode="drop"),
        lengths=state.lengths.at[out_row].set(count, mode="drop"),
        stopped=state.stopped.at[out_row].set(hit_stop, mode="drop"),
        busy_slot_steps=state.busy_slot_steps + jnp.sum(alive, dtype=jnp.int32),
    )


def schedule(state: DecodeState, table: jax.Array, keep: jax.Array) -> DecodeState:
    """The state with the host's page table and without the slots it takes back (`keep` `[S]` bool
    False: preempted rows, redone from the start later)."""
    alive = state.alive & keep
    cache = state.cache.replace(
        page_table=jnp.where(alive[:, None], table, SCRATCH_PAGE), lengths=jnp.where(alive, state.cache.lengths, 0)
    )
    return state.replace(cache=cache, alive=alive, row=jnp.where(alive, state.row, state.lengths.shape[0]))


def decode_steps(
    model: Transformer, state: DecodeState, token_rule: TokenRule, stop_rule: StopRule, steps: int
) -> DecodeState:
    """`steps` decode steps (the engine's call between two scheduling rounds)."""
    return jax.lax.fori_loop(0, steps, lambda _, s: decode_step(model, s, token_rule, stop_rule), state)


def decode_until_done(
    model: Transformer, state: DecodeState, token_rule: TokenRule, stop_rule: StopRule
) -> DecodeState:
    """Decode steps until every slot is idle (the static reference: no refill)."""
    return jax.lax.while_loop(lambda s: jnp.any(s.alive), lambda s: decode_step(model, s, token_rule, stop_rule), state)


def shrink(state: DecodeState, keep: jax.Array, mesh: Mesh | None = None) -> DecodeState:
    """The state cut down to `S'` slots: new slot j is old slot `keep[j]`, counted within j's device.

    keep: `[S']` int32 (from `engine.shrink_plan`). The slots are split over the mesh's batch axes in P
    equal blocks; block b of the new slots takes from block b of the old, and `keep` holds local
    indices (`0 <= keep < S / P`), so each device moves only its own slots (a `shard_map`-ed take;
    their pages stay where they are, in the device's pool). A take by global index over the sharded
    slot axis would not: XLA partitions it as a masked take on every device plus an all-reduce of
    the whole result. Without a mesh P = 1. Request-row outputs are untouched.
    """

    def take(x, logical):
        if mesh is None:
            return x[keep]
        spec = logical_to_spec(logical, x.shape, mesh)
        local = jax.shard_map(lambda block, index: block[index], mesh=mesh, in_specs=(spec, P(spec[0])), out_specs=spec)
        return local(x, keep)

    cache = state.cache
    cache = cache.replace(page_table=take(cache.page_table, ("batch", None)), lengths=take(cache.lengths, ("batch",)))
    return state.replace(cache=cache, **{name: take(getattr(state, name), ("batch",)) for name in SLOT_FIELDS})
