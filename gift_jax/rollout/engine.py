"""Rollouts: `run_engine`, the one entry point, and the host side of its scheduling.

The static reference (`SamplingConfig.max_concurrent_rows=None`) gives every request row its own slot
and decodes all of them in one program until the last one stops. The engine (a number of slots, the
memory knob) is a host loop, JetStream-style, over the jitted programs of `programs.py`:

- `insert` fills free slots with waiting rows (each prompt prefilled once for its samples);
- `decode` runs K decode steps for every slot; a row that stops or reaches its budget leaves its
  slot idle, to be refilled at the next round;
- `shrink` (once no request waits, `SamplingConfig.shrink_tail`): the live rows move into half as
  many slots whenever they fit, so the tail, a few long rows, stops decoding idle slots.

Both schedules run the same decode step (`decode_step.py`) and key every draw by (prompt, sample,
position), so they return the same samples, up to float rounding of the logits.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from gift_jax.models import Transformer
from gift_jax.parallel import batch_parallelism, fetch_global
from gift_jax.rollout.layout import decoding_layout
from gift_jax.rollout.programs import (
    EnginePrograms,
    InsertBatch,
    engine_programs,
    engine_shape,
    prefix_width,
    row_bucket,
)
from gift_jax.rollout.token_sampling import row_keys
from gift_jax.rollout.types import SampleResult, SamplingConfig, assemble_result, check_request, request_indices


class RolloutAborted(Exception):
    """`run_engine`'s `should_stop` asked it to give up (a preempted run redoes the whole rollout phase)."""


@dataclasses.dataclass(frozen=True)
class EngineStats:
    """What one rollout did: decode steps, generated tokens, slot use, wall time.

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
        """Share of slot-steps (slots decoded, summed over steps) that decoded a live row."""
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
    """As many slots as `cache_tokens` generated tokens allow (e.g. 128 for an 8,192-token budget)."""
    return max(1, cache_tokens // max_new_tokens)


def default_slots(num_rows: int, mesh: Mesh | None = None) -> int:
    """`num_rows` slots rounded up to the mesh's batch parallelism (each batch device gets as many)."""
    multiple = batch_parallelism(mesh) if mesh is not None else 1
    return -(-num_rows // multiple) * multiple


def resolve_slots(config: SamplingConfig, rows: int, mesh: Mesh | None = None) -> int:
    """The slot count of a rollout of `rows` request rows (a multiple of the mesh's batch parallelism).

    The static reference gives every row a slot (rows bucket from 1 up: 1, 2, 4, ...); the engine
    never uses more slots than rows; "auto" holds `DEFAULT_CACHE_TOKENS` generated tokens.
    """
    if config.max_concurrent_rows is None:
        return default_slots(row_bucket(rows, config), mesh)
    wanted = config.max_concurrent_rows
    if wanted == "auto":
        wanted = slots_for_budget(config.max_new_tokens)
    return default_slots(min(wanted, rows), mesh)


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


@dataclasses.dataclass
class _Requests:
    """The host's view of one call: prompts, samples per prompt, each prompt's budget and the row keys."""

    prompts: Sequence[Sequence[int]]
    samples: int
    budgets: list[int]
    keys: jax.Array  # [R] row base keys

    def insert_batch(self, rows: list[int], slots: list[int], config: SamplingConfig, idle_slot: int) -> InsertBatch:
        """Host arrays of an insert of request `rows` into `slots`: their unique prompts prefilled once,
        counts padded to buckets (few compilations), padding rows sent to `idle_slot` (dropped)."""
        n = self.samples
        unique = sorted({r // n for r in rows})
        position = {p: i for i, p in enumerate(unique)}
        width = prefix_width(config, max(len(self.prompts[p]) for p in unique))
        prefix_ids = np.full((row_bucket(len(unique), config), width), config.pad_id, np.int32)
        prefix_mask = np.zeros_like(prefix_ids)
        for i, p in enumerate(unique):
            prefix = self.prompts[p][:-1]
            prefix_ids[i, : len(prefix)], prefix_mask[i, : len(prefix)] = prefix, 1
        pad = row_bucket(len(rows), config) - len(rows)
        row = np.array(rows + [0] * pad, np.int32)
        return InsertBatch(
            prefix_ids=prefix_ids,
            prefix_mask=prefix_mask,
            source=np.array([position[r // n] for r in rows] + [0] * pad, np.int32),
            slot=np.array(slots + [idle_slot] * pad, np.int32),
            last_token=np.array([self.prompts[r // n][-1] for r in rows] + [config.pad_id] * pad, np.int32),
            keys=self.keys[row],
            row=row,
            budget=np.array([self.budgets[r // n] for r in rows] + [0] * pad, np.int32),
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
    """Samples `config.num_samples` completions for each prompt -> (result, run statistics).

    Args:
      model: the policy (its parameters may be sharded over `mesh`; on a mesh it decodes from a copy
        in the decoding layout, `layout.decoding_layout`, dropped on return).
      prompts: token-id lists of any lengths (each non-empty).
      config: decoding options; `max_concurrent_rows` picks the engine's slots or the static reference.
      rng: PRNG key; sample j of prompt i draws its token t from
        `fold_in(fold_in(fold_in(rng, i), j), t)`.
      mesh: when given, slots are split over its batch axes (their count rounded up to a multiple).
        With several processes, every process passes the same prompts and receives all rows.
      budgets: optional per-prompt generation budgets (each in [1, max_new_tokens]); a row that
        reaches its budget without a stop token is truncated there.
      should_stop: asked once per decode call (every process of a multi-host run asks it the same
        number of times); when it answers True the rollout is abandoned with `RolloutAborted`.
    Returns:
      `SampleResult` with `len(prompts) * num_samples` rows, prompt i's samples at rows
      `i * n ... i * n + n - 1`, and the `EngineStats` of the run.
    """
    started = time.perf_counter()
    prompt_budgets = check_request(model.config, prompts, config, budgets)
    if mesh is not None:
        model = decoding_layout(model, mesh)  # no per-token all-gather of fsdp-sharded weights
    n = config.num_samples
    rows = [list(prompt) for prompt in prompts for _ in range(n)]
    requests = _Requests(prompts, n, prompt_budgets, row_keys(rng, *request_indices(len(prompts), n)))
    graphdef, params = nnx.split(model)
    slots = resolve_slots(config, len(rows), mesh)
    # Output buffers for a bucket of request rows, so calls with similar row counts share compilations.
    shape = engine_shape(
        config, slots=slots, rows=row_bucket(len(rows), config), longest_prompt=max(len(p) for p in prompts)
    )
    programs = engine_programs(model.config, config, shape, mesh)
    if config.max_concurrent_rows is None:
        state, counts = _run_static(programs, graphdef, params, requests, config)
    else:
        state, counts = _run_scheduled(programs, graphdef, params, requests, config, mesh, should_stop)
    outputs = (state.tokens, state.logprobs, state.entropies, state.lengths, state.stopped, state.busy_slot_steps)
    *per_row, busy = fetch_global(outputs)  # every process gets every row
    row_budgets = np.repeat(np.asarray(prompt_budgets, np.int32), n)
    result = assemble_result(rows, config, *(x[: len(rows)] for x in per_row), row_budgets)
    decode_steps, slot_steps, prefilled = counts
    if decode_steps is None:  # static: the loop ran until the longest row ended
        decode_steps = int(result.lengths.max())
        slot_steps = decode_steps * slots
    stats = EngineStats(
        decode_steps=decode_steps,
        generated_tokens=int(result.lengths.sum()),
        slots=shape.slots,
        slot_steps=slot_steps,
        busy_slot_steps=int(busy),
        prefilled_prompts=prefilled,
        seconds=time.perf_counter() - started,
    )
    return result, stats


def _run_static(programs: EnginePrograms, graphdef, params, requests: _Requests, config):
    """Every request row in its own slot, one program: -> (final state, (None, None, prompts prefilled))."""
    rows = list(range(len(requests.prompts) * requests.samples))
    batch = requests.insert_batch(rows, rows, config, programs.shape.slots)
    return programs.generate(graphdef, params, batch), (None, None, len(requests.prompts))


def _run_scheduled(programs: EnginePrograms, graphdef, params, requests: _Requests, config, mesh, should_stop):
    """The engine's host loop -> (final state, (decode steps, slot-steps, prompts prefilled))."""
    slots = programs.shape.slots
    blocks = batch_parallelism(mesh) if mesh is not None else 1
    state = programs.init()
    pending = deque(range(len(requests.prompts) * requests.samples))
    occupied = np.zeros(slots, bool)
    decode_calls = prefilled = slot_steps = 0
    while True:
        if pending and not occupied.all():
            targets = spread_over_devices(occupied, min(int((~occupied).sum()), len(pending)), blocks)
            batch = [pending.popleft() for _ in targets]
            occupied[targets] = True
            insert = requests.insert_batch(batch, targets, config, slots)
            state = programs.insert(graphdef, params, state, insert)
            prefilled += len({r // requests.samples for r in batch})
        if not occupied.any():
            break
        if should_stop is not None and should_stop():
            raise RolloutAborted(f"rollout abandoned after {decode_calls} decode calls")
        state = programs.decode(graphdef, params, state)
        decode_calls += 1
        slot_steps += slots * programs.steps
        occupied &= np.asarray(fetch_global(state.alive))
        keep = shrink_plan(occupied, blocks) if config.shrink_tail and not pending else None
        if keep is not None:
            state = programs.shrink(state, keep)
            old_share, slots = slots // blocks, len(keep)
            occupied = occupied[keep + np.arange(slots) // (slots // blocks) * old_share]
    return state, (decode_calls * programs.steps, slot_steps, prefilled)
