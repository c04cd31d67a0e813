"""Continuous-batching rollouts: a fixed number of decode slots, refilled as rows finish.

The static sampler (`sampler.generate`) allocates every row's cache up front and decodes all rows
in lockstep until the longest stops. Here the cache has `slots` rows of `max_len` tokens (the
memory knob: cache bytes = slots x max_len x per-token bytes) and requests queue for them. A host
loop (JetStream-style) alternates two jitted functions:

- `insert`: prefills a few prompts once each (shared prompt prefill: the n samples of a prompt
  copy one prefill's cache rows) and writes them into free slots, with each row's base key,
  output row and budget;
- `decode_k_steps`: K decode steps for all slots; a row that draws a stop token or reaches its
  budget goes idle (its slot is refilled at the next scheduling round).
- `shrink` (once no request waits, `SamplingConfig.shrink_tail`): the live rows move into half as
  many slots whenever they fit, so the tail, a few long rows, stops decoding idle slots (one decode
  compilation per slot count).

Rows sit in their slot right-aligned to slot 0: prompt tokens at cache slots `[0, p - 1)`, the
last prompt token fed by the first decode step, generated tokens after. The cache index is per row
(`KVCache.index` `[slots]`), and decode attention visits only the cache blocks below the longest
live row (`models.decode_attention`). Each row's draws are keyed by (prompt, sample, position)
(`token_sampling.row_keys`), so the slot count and the scheduling do not change the samples: the
engine returns what `sample_static` returns, up to float rounding of the logits.

Outputs are written straight into `[rows, N_b]` buffers indexed by request row (never by slot),
so nothing is gathered per finished row and the result comes back in request order.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from gift_jax.models import KVCache, ModelConfig, Transformer, init_cache
from gift_jax.models.decode_attention import cache_length
from gift_jax.parallel import batch_parallelism, fetch_global, logical_to_spec
from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.layout import decoding_layout
from gift_jax.rollout.sampler import (
    SampleResult,
    SamplingConfig,
    assemble_result,
    check_request,
    constrain_cache,
    is_stop,
    request_indices,
)
from gift_jax.rollout.token_sampling import TokenRule, choose_tokens, position_keys, row_keys


class RolloutAborted(Exception):
    """`run_engine`'s `should_stop` asked it to give up (a preempted run redoes the whole rollout phase)."""


class SlotState(NamedTuple):
    """Device state of the engine (S slots, R request rows, N_b bucketed generation length).

    cache: `KVCache` with `[S]` per-row index. feed `[S]` int32: the token each slot runs next.
    keys `[S]`: each slot's row base key. row `[S]` int32: the output row a slot fills (R when idle).
    count `[S]` int32: tokens the slot's row has generated. budget `[S]` int32. alive `[S]` bool.
    tokens `[R, N_b]` int32, logprobs / entropies `[R, N_b]` float32, lengths `[R]` int32,
    stopped `[R]` bool: the outputs, by request row. busy_slot_steps `[]` int32: sum over decode
    steps of live slots (occupancy = busy_slot_steps / (steps x S)).
    """

    cache: KVCache
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


@dataclasses.dataclass(frozen=True)
class EngineShape:
    """Static sizes of one engine run (hashable: a static jit argument).

    slots: concurrent rows. max_len: cache length per slot (prompt bucket + generation bucket,
    rounded up by `cache_length`).
    rows: request rows (prompts x samples). max_new_bucket: width of the output buffers.
    cache_dtype: None = the model's compute dtype, or e.g. "bfloat16".
    """

    slots: int
    max_len: int
    rows: int
    max_new_bucket: int
    cache_dtype: str | None = None


@dataclasses.dataclass(frozen=True)
class EngineStats:
    """What one engine run did: decode steps, generated tokens, slot use, wall time.

    slots: the slot count the run started with (its cache memory); slot_steps: slots decoded, summed
    over decode steps (fewer than decode_steps x slots once the tail shrinks).
    """

    decode_steps: int
    generated_tokens: int
    slots: int
    slot_steps: int
    busy_slot_steps: int
    prefilled_prompts: int
    seconds: float

    @property
    def slot_occupancy(self) -> float:
        """Share of slot-steps (slots decoded, summed over steps; fewer once the tail shrinks) that
        decoded a live row."""
        return self.busy_slot_steps / max(self.slot_steps, 1)

    @property
    def padding_share(self) -> float:
        return 1.0 - self.slot_occupancy

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / max(self.seconds, 1e-9)

    def metrics(self) -> dict[str, float]:
        return {
            "rollout_slot_occupancy": self.slot_occupancy,
            "rollout_padding_share": self.padding_share,
            "rollout_slots": float(self.slots),
            "rollout_decode_steps": float(self.decode_steps),
            "rollout_slot_steps": float(self.slot_steps),
        }


DEFAULT_CACHE_TOKENS = 2**20  # generated tokens the default slot count holds (~57 GB of bf16 cache at 7B)


def slots_for_budget(max_new_tokens: int, cache_tokens: int = DEFAULT_CACHE_TOKENS) -> int:
    """Default `max_concurrent_rows`: as many slots as `cache_tokens` generated tokens allow.

    E.g. 128 slots for an 8,192-token budget, 1,024 for 1,024 tokens (the engine never uses more
    slots than there are rows).
    """
    return max(1, cache_tokens // max_new_tokens)


def init_state(model_config: ModelConfig, shape: EngineShape, pad_id: int, mesh: Mesh | None = None) -> SlotState:
    """Empty slots and output buffers (call under jit so the cache is created on device)."""
    s, r = shape.slots, shape.rows
    cache = init_cache(model_config, s, shape.max_len, dtype=shape.cache_dtype and jnp.dtype(shape.cache_dtype))
    cache = cache._replace(index=jnp.zeros((s,), jnp.int32))
    if mesh is not None:
        cache = constrain_cache(cache, mesh)
    return SlotState(
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


@functools.partial(jax.jit, static_argnames=("model_config", "shape", "pad_id", "mesh"))
def _init_state_jit(*, model_config, shape, pad_id, mesh):
    return init_state(model_config, shape, pad_id, mesh)


@functools.partial(jax.jit, donate_argnames=("state",))
def insert(
    graphdef,
    params,
    state: SlotState,
    prefix_ids: jax.Array,
    prefix_mask: jax.Array,
    source: jax.Array,
    slot: jax.Array,
    last_token: jax.Array,
    keys: jax.Array,
    row: jax.Array,
    budget: jax.Array,
) -> SlotState:
    """Prefills U prompts once and places M rows copied from them into free slots.

    Args:
      graphdef, params: `nnx.split(model)`.
      state: the engine state (donated).
      prefix_ids, prefix_mask: `[U, W]` int32, each prompt but its last token, right-padded (a
        one-token prompt has an empty prefix).
      source: `[M]` int32, which prefilled prompt each new row copies.
      slot: `[M]` int32, the free slot it goes to (S for padding entries, which are dropped).
      last_token: `[M]` int32, the prompt's last token (fed by the row's first decode step).
      keys: `[M]` row base keys. row: `[M]` int32 output rows. budget: `[M]` int32.
    """
    model: Transformer = nnx.merge(graphdef, params)
    num, width = prefix_ids.shape
    prefill = init_cache(model.config, num, width, dtype=state.cache.k[0].dtype)
    _, prefill = model.decode(prefix_ids, prefill, attention_mask=prefix_mask)
    cache = state.cache
    slots = cache.key_mask.shape[1]
    k = tuple(c.at[slot, :, :width].set(p[source], mode="drop") for c, p in zip(cache.k, prefill.k, strict=True))
    v = tuple(c.at[slot, :, :width].set(p[source], mode="drop") for c, p in zip(cache.v, prefill.v, strict=True))
    fresh_mask = jnp.pad(prefill.key_mask[source], ((0, 0), (0, slots - width)))
    cache = KVCache(
        k,
        v,
        cache.key_mask.at[slot].set(fresh_mask, mode="drop"),
        cache.index.at[slot].set(jnp.sum(prefix_mask, axis=1)[source], mode="drop"),
    )

    def put(x, values):
        return x.at[slot].set(values, mode="drop")

    return state._replace(
        cache=cache,
        feed=put(state.feed, last_token),
        keys=put(state.keys, keys),
        row=put(state.row, row),
        count=put(state.count, jnp.zeros_like(row)),
        budget=put(state.budget, budget),
        alive=put(state.alive, budget > 0),
    )


def decode_k_steps(
    graphdef, params, state: SlotState, *, steps: int, rule: TokenRule, stop_ids: tuple[int, ...], pad_id: int
) -> SlotState:
    """`steps` decode steps for every slot; rows that stop or reach their budget go idle.

    Pure function of arrays + static options (`decode_k_steps_jit` is its jitted, state-donating
    form; `abstract_decode_inputs` gives abstract arguments for compile-only checks).
    """
    model: Transformer = nnx.merge(graphdef, params)
    num_rows = state.lengths.shape[0]

    def one_step(_, s: SlotState) -> SlotState:
        logits, cache = model.decode(s.feed[:, None], s.cache, attention_mask=s.alive[:, None])
        choice = choose_tokens(logits[:, -1], position_keys(s.keys, s.count), rule)
        alive = s.alive
        tokens = jnp.where(alive, choice.tokens, pad_id)
        out_row = jnp.where(alive, s.row, num_rows)  # idle slots write out of range: dropped
        hit_stop = alive & is_stop(tokens, stop_ids)
        count = s.count + alive.astype(jnp.int32)
        finished = alive & (hit_stop | (count >= s.budget))
        # Idle slots keep index 0, so they do not widen the span decode attention visits.
        index = jnp.where(alive & ~finished, cache.index, 0)
        return s._replace(
            cache=cache._replace(index=index),
            feed=tokens,
            count=count,
            alive=alive & ~finished,
            row=jnp.where(finished, num_rows, s.row),
            tokens=s.tokens.at[out_row, s.count].set(tokens, mode="drop"),
            logprobs=s.logprobs.at[out_row, s.count].set(choice.logprobs, mode="drop"),
            entropies=s.entropies.at[out_row, s.count].set(choice.entropies, mode="drop"),
            lengths=s.lengths.at[out_row].set(count, mode="drop"),
            stopped=s.stopped.at[out_row].set(hit_stop, mode="drop"),
            busy_slot_steps=s.busy_slot_steps + jnp.sum(alive, dtype=jnp.int32),
        )

    return jax.lax.fori_loop(0, steps, one_step, state)


decode_k_steps_jit = jax.jit(
    decode_k_steps, static_argnames=("steps", "rule", "stop_ids", "pad_id"), donate_argnames=("state",)
)


@functools.partial(jax.jit, static_argnames=("mesh",))
def shrink(state: SlotState, keep: jax.Array, mesh: Mesh | None = None) -> SlotState:
    """The state cut down to `S'` slots: new slot j is old slot `keep[j]`, counted within j's device.

    keep: `[S']` int32 (from `shrink_plan`). The slots are split over the mesh's batch axes in P
    equal blocks; block b of the new slots takes from block b of the old, and `keep` holds local
    indices (`0 <= keep < S / P`), so each device moves only its own cache rows (a `shard_map`-ed
    take). A take by global index over the sharded slot axis would not: XLA partitions it as a
    masked take on every device plus an all-reduce of the whole result. Without a mesh P = 1.
    Row outputs are untouched. Not donated: the cut cache has another shape, so the old buffers
    could not be reused; for the call the cache is held at S + S' slots.
    """

    def take(x, logical):
        if mesh is None:
            return x[keep]
        spec = logical_to_spec(logical, x.shape, mesh)
        local = jax.shard_map(lambda block, index: block[index], mesh=mesh, in_specs=(spec, P(spec[0])), out_specs=spec)
        return local(x, keep)

    kv_axes = ("batch", "kv_heads", None, None)
    cache = state.cache
    cache = KVCache(
        tuple(take(k, kv_axes) for k in cache.k),
        tuple(take(v, kv_axes) for v in cache.v),
        take(cache.key_mask, ("batch", None)),
        take(cache.index, ("batch",)),
    )
    per_slot = ("feed", "keys", "row", "count", "budget", "alive")
    return state._replace(cache=cache, **{name: take(getattr(state, name), ("batch",)) for name in per_slot})


def spread_over_devices(occupied: np.ndarray, count: int, blocks: int = 1) -> list[int]:
    """`count` free slots for new rows, each from the device (of `blocks`) with the most free slots.

    Consecutive rows (the samples of one prompt, whose lengths go together) land on different
    devices, so the devices drain evenly and `shrink_plan` can halve the slots sooner.
    """
    free = (~occupied).reshape(blocks, -1).copy()
    picks = []
    for _ in range(count):
        block = int(np.argmax(free.sum(axis=1)))
        local = int(np.argmax(free[block]))
        free[block, local] = False
        picks.append(block * free.shape[1] + local)
    return picks


def shrink_plan(occupied: np.ndarray, blocks: int = 1) -> np.ndarray | None:
    """`keep` for `shrink` (local indices `[S']`), or None when the live rows do not fit in half the slots.

    occupied: `[S]` bool, the live slots. blocks: P, the devices the slots are split over. The
    width halves while it stays a multiple of P and every device's live rows fit its share; each
    device keeps its live slots first, then idle ones to fill its share.
    """
    per_block = occupied.reshape(blocks, -1)
    live = per_block.sum(axis=1).max()
    width = len(occupied)
    while live and width % (2 * blocks) == 0 and width // 2 // blocks >= live:
        width //= 2
    if width == len(occupied):
        return None
    share = width // blocks
    order = np.argsort(~per_block, axis=1, kind="stable")[:, :share]  # live first, in slot order
    return order.reshape(-1).astype(np.int32)


def abstract_decode_inputs(model: Transformer, shape: EngineShape, pad_id: int = 0, mesh: Mesh | None = None):
    """(graphdef, abstract params, abstract state) for compiling `decode_k_steps_jit` without running it.

    E.g. `decode_k_steps_jit.lower(*abstract_decode_inputs(model, shape), steps=8, rule=...,
    stop_ids=..., pad_id=0).compile().memory_analysis()`; `model` may itself be abstract
    (`nnx.eval_shape`), its parameters carrying their shardings.
    """
    graphdef, params = nnx.split(model)
    abstract_params = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), params
    )
    state = jax.eval_shape(lambda: init_state(model.config, shape, pad_id, mesh))
    return graphdef, abstract_params, state


def default_slots(num_rows: int, mesh: Mesh | None = None) -> int:
    """All rows at once, rounded to the mesh's batch parallelism (the static sampler's memory)."""
    multiple = batch_parallelism(mesh) if mesh is not None else 1
    return -(-num_rows // multiple) * multiple


def prefix_width(config: SamplingConfig, longest_prompt: int) -> int:
    """Bucketed width of the prefill: every prompt token but the last (the first decode step feeds it)."""
    return config.bucket(max(longest_prompt - 1, 1))


def engine_shape(config: SamplingConfig, *, slots: int, rows: int, longest_prompt: int) -> EngineShape:
    """The static sizes of an engine run over `rows` request rows with prompts of up to `longest_prompt` tokens."""
    generation = config.bucket(config.max_new_tokens)
    return EngineShape(
        slots=slots,
        max_len=cache_length(prefix_width(config, longest_prompt) + generation),
        rows=rows,
        max_new_bucket=generation,
        cache_dtype=config.cache_dtype,
    )


def run_engine(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    rng: jax.Array,
    *,
    mesh: Mesh | None = None,
    budgets: Sequence[int] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[SampleResult, EngineStats]:
    """`sample` on the engine with `config.max_concurrent_rows` slots -> (result, run statistics).

    `should_stop` is asked once per decode call (every process of a multi-host run asks it the same
    number of times); when it answers True the rollout is abandoned with `RolloutAborted`.
    """
    started = time.perf_counter()
    prompt_budgets = check_request(model.config, prompts, config, budgets)
    if mesh is not None:
        model = decoding_layout(model, mesh)  # no per-token all-gather of fsdp-sharded weights
    n = config.num_samples
    rows = [list(prompt) for prompt in prompts for _ in range(n)]
    multiple = batch_parallelism(mesh) if mesh is not None else 1
    slots = default_slots(min(config.max_concurrent_rows or len(rows), len(rows)), mesh)
    shape = engine_shape(config, slots=slots, rows=len(rows), longest_prompt=max(len(p) for p in prompts))
    requests, samples = request_indices(len(prompts), n)
    keys = row_keys(rng, requests, samples)  # [R]
    graphdef, params = nnx.split(model)
    state = _init_state_jit(model_config=model.config, shape=shape, pad_id=config.pad_id, mesh=mesh)
    decode = functools.partial(
        decode_k_steps_jit,
        graphdef,
        params,
        steps=config.decode_steps_per_call,
        rule=config.token_rule(),
        stop_ids=config.stop_ids,
        pad_id=config.pad_id,
    )

    pending = deque(range(len(rows)))
    occupied = np.zeros(slots, bool)
    decode_calls = prefilled = slot_steps = 0
    while True:
        if pending and not occupied.all():
            targets = spread_over_devices(occupied, min(int((~occupied).sum()), len(pending)), multiple)
            batch = [pending.popleft() for _ in targets]
            occupied[targets] = True
            state = _insert_rows(
                graphdef, params, state, batch, targets, prompts, n, keys, prompt_budgets, config, slots
            )
            prefilled += len({r // n for r in batch})
        if not occupied.any():
            break
        if should_stop is not None and should_stop():
            raise RolloutAborted(f"rollout abandoned after {decode_calls} decode calls")
        state = decode(state)
        decode_calls += 1
        slot_steps += slots * config.decode_steps_per_call
        occupied &= np.asarray(fetch_global(state.alive))
        keep = shrink_plan(occupied, multiple) if config.shrink_tail and not pending else None
        if keep is not None:
            state = shrink(state, keep, mesh)
            old_share, slots = slots // multiple, len(keep)
            occupied = occupied[keep + np.arange(slots) // (slots // multiple) * old_share]

    out = fetch_global(
        (state.tokens, state.logprobs, state.entropies, state.lengths, state.stopped, state.busy_slot_steps)
    )
    tokens, logprobs, entropies, lengths, stopped, busy = out
    row_budgets = np.repeat(np.asarray(prompt_budgets, np.int32), n)
    result = assemble_result(rows, config, tokens, logprobs, entropies, lengths, stopped, row_budgets)
    stats = EngineStats(
        decode_steps=decode_calls * config.decode_steps_per_call,
        generated_tokens=int(result.lengths.sum()),
        slots=shape.slots,
        slot_steps=slot_steps,
        busy_slot_steps=int(busy),
        prefilled_prompts=prefilled,
        seconds=time.perf_counter() - started,
    )
    return result, stats


def _insert_rows(graphdef, params, state, batch, targets, prompts, n, keys, prompt_budgets, config, slots):
    """Host side of `insert`: unique prompts of the new rows, padded to buckets (few compilations)."""
    unique = sorted({r // n for r in batch})
    position = {p: i for i, p in enumerate(unique)}
    num_unique = bucket_size(len(unique), minimum=1, granularity=config.bucket_granularity)
    width = prefix_width(config, max(len(prompts[p]) for p in unique))
    prefix_ids = np.full((num_unique, width), config.pad_id, np.int32)
    prefix_mask = np.zeros((num_unique, width), np.int32)
    for i, p in enumerate(unique):
        prefix = prompts[p][:-1]
        prefix_ids[i, : len(prefix)], prefix_mask[i, : len(prefix)] = prefix, 1
    m = bucket_size(len(batch), minimum=1, granularity=config.bucket_granularity)
    pad = m - len(batch)
    source = np.array([position[r // n] for r in batch] + [0] * pad, np.int32)
    slot = np.array(targets + [slots] * pad, np.int32)
    last = np.array([prompts[r // n][-1] for r in batch] + [config.pad_id] * pad, np.int32)
    row = np.array(batch + [0] * pad, np.int32)
    budget = np.array([prompt_budgets[r // n] for r in batch] + [0] * pad, np.int32)
    return insert(graphdef, params, state, prefix_ids, prefix_mask, source, slot, last, keys[row], row, budget)


def sample_continuous(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    rng: jax.Array,
    *,
    mesh: Mesh | None = None,
    budgets: Sequence[int] | None = None,
) -> SampleResult:
    """`sample` on the engine (`config.max_concurrent_rows` slots); see `run_engine`."""
    return run_engine(model, prompts, config, rng, mesh=mesh, budgets=budgets)[0]
