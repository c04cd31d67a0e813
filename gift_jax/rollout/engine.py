"""Rollouts: `run_engine`, the one entry point, and the host side of its scheduling.

The KV cache is paged (`models.paged_attention`): a pool of pages per device, which the host hands
out to rows as they grow and takes back when they stop (`pages.PagePool`), so its memory follows the
tokens held; and each row attends over its own pages only.

The static reference (`SamplingConfig.max_concurrent_rows=None`) gives every request row its own slot
and all its pages, and decodes all of them in one program until the last one stops. The engine (a
number of slots) is a host loop, JetStream-style, over the jitted programs of `programs.py`; a round:

- pages for every live row's next K tokens; when a device's pool runs out, its latest rows give
  theirs back and wait again (preemption: a redone row draws the same tokens, its draws are keyed);
- `insert` fills free slots with waiting rows that have pages for their prompt (a prompt is
  prefilled once per device and its pages shared by its samples across rounds, `admission`);
- `decode` runs K decode steps for every slot; a row that stops or reaches its budget leaves its
  slot idle and its pages free, to be refilled at the next round;
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
from gift_jax.models.paged_attention import backend_for
from gift_jax.parallel import batch_parallelism, fetch_global
from gift_jax.parallel.chips import chip_for
from gift_jax.rollout.admission import Admission, Requests
from gift_jax.rollout.layout import decode_mesh, decode_param_dtype, decoding_layout
from gift_jax.rollout.pages import PagePool
from gift_jax.rollout.plan import plan_decode
from gift_jax.rollout.programs import (
    EnginePrograms,
    engine_programs,
    engine_shape,
    row_bucket,
)
from gift_jax.rollout.sizing import free_device_bytes
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
    preempted_rows: int = 0  # rows that gave their pages back when the pool ran out, and were redone

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
            "rollout_preempted_rows": float(self.preempted_rows),
        }


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
      mesh: when given, the rollout decodes on a mesh of the same devices laid out for decoding
        (`layout.decode_mesh`, `config.decode_tensor`): slots and the page pool split over its batch
        axes (the slot count rounded up to a multiple), weights and kv heads over its `tensor`. With
        several processes, every process passes the same prompts and receives all rows.
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
    n = config.num_samples
    rows = [list(prompt) for prompt in prompts for _ in range(n)]
    requests = Requests(prompts, n, prompt_budgets, row_keys(rng, *request_indices(len(prompts), n)))
    devices = list(mesh.devices.flat) if mesh is not None else jax.local_devices()
    decode_config = model.config.replace(param_dtype=str(decode_param_dtype(model.config)))
    plan = plan_decode(
        config,
        decode_config,
        rows=len(rows),
        longest_row=max(requests.positions(row) for row in range(len(rows))),
        chips=len(devices) if mesh is not None else 1,
        mesh_tensor=mesh.shape["tensor"] if mesh is not None else 1,
        memory=free_device_bytes([d for d in devices if d.process_index == jax.process_index()]),
        chip=chip_for(devices[0].device_kind),
    )
    if mesh is not None:  # a copy in the decoding layout, on the decode mesh; dropped on return
        mesh = decode_mesh(mesh, plan.tensor)
        model = decoding_layout(model, mesh)
    graphdef, params = nnx.split(model)
    blocks = batch_parallelism(mesh) if mesh is not None else 1
    # Output buffers for a bucket of request rows, so calls with similar row counts share compilations.
    shape = engine_shape(
        config,
        slots=plan.slots,
        rows=row_bucket(len(rows), config),
        longest_prompt=max(len(p) for p in prompts),
        devices=blocks,
        pages_per_device=plan.pages_per_device,
        backend=backend_for(devices[0].platform),
    )
    programs = engine_programs(model.config, config, shape, mesh)
    pool = PagePool(
        devices=blocks,
        pages_per_device=shape.pages // blocks,
        slots=shape.slots,
        pages_per_slot=shape.pages_per_slot,
        page_size=shape.page_size,
    )
    admission = Admission(requests, pool, config, shape.slots, shape.rows)
    if config.max_concurrent_rows is None:
        state, counts = _run_static(programs, graphdef, params, admission)
    else:
        state, counts = _Schedule(programs, graphdef, params, admission, blocks).run(should_stop)
    outputs = (state.tokens, state.logprobs, state.entropies, state.lengths, state.stopped, state.busy_slot_steps)
    *per_row, busy = fetch_global(outputs)  # every process gets every row
    row_budgets = np.repeat(np.asarray(prompt_budgets, np.int32), n)
    result = assemble_result(rows, config, *(x[: len(rows)] for x in per_row), row_budgets)
    decode_steps, slot_steps, prefilled, preempted = counts
    if decode_steps is None:  # static: the loop ran until the longest row ended
        decode_steps = int(result.lengths.max())
        slot_steps = decode_steps * shape.slots
    stats = EngineStats(
        decode_steps=decode_steps,
        generated_tokens=int(result.lengths.sum()),
        slots=shape.slots,
        slot_steps=slot_steps,
        busy_slot_steps=int(busy),
        prefilled_prompts=prefilled,
        preempted_rows=preempted,
        seconds=time.perf_counter() - started,
    )
    return result, stats


def _run_static(programs: EnginePrograms, graphdef, params, admission: Admission):
    """Every request row in its own slot with all its pages, one program -> (final state, counts)."""
    for row in range(len(admission.requests.prompts) * admission.requests.samples):
        assert admission.admit(row, row, admission.requests.positions(row)), "the static pool holds every row"
    state = programs.generate(graphdef, params, admission.batch(), admission.pool.table)
    return state, (None, None, admission.prefilled, 0)


class _Schedule:
    """The engine's host loop (see the module docstring): rounds of preempt / admit / insert / decode /
    release / shrink until every request row has finished."""

    def __init__(self, programs: EnginePrograms, graphdef, params, admission: Admission, blocks: int):
        self.programs, self.graphdef, self.params = programs, graphdef, params
        self.admission, self.requests, self.pool = admission, admission.requests, admission.pool
        self.config, self.blocks = admission.config, blocks
        slots = programs.shape.slots
        self.row = np.full(slots, -1)  # request row in each slot, -1 when idle
        self.held = np.zeros(slots, np.int64)  # cache positions each slot's row has written
        self.since = np.zeros(slots, np.int64)  # round each slot's row came in (preemption is LIFO)
        self.pending = deque(range(len(self.requests.prompts) * self.requests.samples))
        self.decode_calls = self.slot_steps = self.preempted = 0

    def run(self, should_stop) -> tuple:
        longest = max(self.requests.positions(row) for row in self.pending)
        if self.pool.pages_for(longest) + 1 > self.pool.pages_per_device - 1:
            raise ValueError(
                f"rollout: a device's pool of {self.pool.pages_per_device} pages of {self.pool.page_size} "
                f"positions (one of them scratch) cannot hold the longest row ({longest} positions) and "
                f"its prompt's template page; raise pages_per_device or shorten the budget"
            )
        state = self.programs.init()
        steps = self.programs.steps
        while True:
            self._make_room(steps)
            state = self._admit(state, steps)
            occupied = self.row >= 0
            if not occupied.any():
                break
            if should_stop is not None and should_stop():
                raise RolloutAborted(f"rollout abandoned after {self.decode_calls} decode calls")
            state = self.programs.decode(self.graphdef, self.params, state, self.pool.table, occupied)
            self.decode_calls += 1
            self.slot_steps += len(self.row) * steps
            alive = np.asarray(fetch_global(state.alive))
            self.held[occupied] += steps
            for slot in np.flatnonzero(occupied & ~alive):
                self._free(slot)
            state = self._shrink(state)
        counts = (self.decode_calls * steps, self.slot_steps, self.admission.prefilled, self.preempted)
        return state, counts

    def _wanted(self, slot: int, steps: int) -> int:
        """Positions the slot's row may hold after the next decode call."""
        return min(self.held[slot] + steps, self.requests.positions(self.row[slot]))

    def _make_room(self, steps: int) -> None:
        """Pages for every live row's next `steps` tokens; when a device runs out, its latest rows give
        theirs back and wait again (redone from the start: their draws are keyed, so nothing changes)."""
        for slot in np.argsort(self.since, kind="stable"):  # the oldest rows first
            if self.row[slot] < 0:
                continue
            while not self.pool.grow(slot, self._wanted(slot, steps)):
                device = self.pool.device(slot)
                mine = [s for s in np.flatnonzero(self.row >= 0) if self.pool.device(s) == device]
                victim = max(mine, key=lambda s: self.since[s])
                self.pending.appendleft(int(self.row[victim]))
                self.admission.requeue(int(self.row[victim]))
                self._free(victim)
                self.preempted += 1
                if victim == slot:
                    break

    def _admit(self, state, steps: int):
        """Waiting rows into free slots with pages for their prompt and first `steps` tokens: on a device
        holding the prompt's pages when one has room, else on the device with the most free slots."""
        free = self.row < 0
        while self.pending and free.any():
            row = self.pending[0]
            slot = self.admission.device_for(row, free)
            if slot is None:
                slot = spread_over_devices(~free, 1, self.blocks)[0]
            positions = min(self.requests.prefix(row) + steps, self.requests.positions(row))
            if not self.admission.admit(row, slot, positions):
                device = self.pool.device(slot)  # this device's pool is short this round
                free.reshape(self.blocks, -1)[device] = False
                continue
            self.pending.popleft()
            free[slot] = False
            self.row[slot], self.held[slot], self.since[slot] = row, self.requests.prefix(row), self.decode_calls
        batch = self.admission.batch()
        return (
            state if batch is None else self.programs.insert(self.graphdef, self.params, state, batch, self.pool.table)
        )

    def _free(self, slot: int) -> None:
        self.pool.release(slot)
        self.row[slot], self.held[slot] = -1, 0

    def _shrink(self, state):
        """Once no row waits: the live rows into half the slots (repeatedly) when they fit."""
        if not self.config.shrink_tail or self.pending:
            return state
        keep = shrink_plan(self.row >= 0, self.blocks)
        if keep is None:
            return state
        state = self.programs.shrink(state, keep)
        source = keep + np.arange(len(keep)) // (len(keep) // self.blocks) * (len(self.row) // self.blocks)
        self.pool.move(keep)
        self.row, self.held, self.since = self.row[source], self.held[source], self.since[source]
        return state
