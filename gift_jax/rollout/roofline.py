"""A roofline estimate of decoding, and of a whole rollout phase by simulating the engine's schedule.

A decode step's lower bound, per group of `tensor` chips that share rows (the decode mesh; every chip
of a group reads its 1/tensor of the weights and of each row's kv heads):

- HBM bytes per chip: the decoding copy's weights a step reads (`layout.decode_weight_bytes`) plus the
  cached keys / values the rows attend over: paged ragged attention reads each live row's own length;
  the dense blocked attention it replaced read every slot up to the longest row (over all chips:
  under SPMD the loop bound is global);
- FLOPs per chip: 2 x matmul weights x slots (every slot runs the matmuls) + 4 x layers x heads x
  head_dim x attended positions;
- chip-to-chip bytes per chip (tensor > 1): two all-reduces of `[slots, hidden]` bf16 per layer (after
  the attention and the MLP output projections) and one all-gather of the `[slots, vocab]` float32
  logits, ring cost `2 (t-1)/t` and `(t-1)/t` of their size;
- the step takes at least the largest of bytes / HBM bandwidth, FLOPs / peak and link bytes / link
  bandwidth (`bound` names it); collective latencies and kernel overheads are not counted. The
  mesh steps in lockstep, so a step costs its slowest group.

`simulate_rollout` replays the engine's host loop on these costs: rows refill free slots every K steps
(spread over groups), finish at their sampled lengths, the tail halves its slots, a paged pool that
runs out preempts its latest row (redone from the start), each prompt is prefilled once (compute
bound). Everything here is analytic: chip figures from `parallel.chips`, sizes from the model config.
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np

from gift_jax.models import ModelConfig
from gift_jax.parallel.chips import Chip
from gift_jax.rollout.layout import decode_weight_bytes
from gift_jax.rollout.sizing import kv_bytes_per_position, kv_heads_per_device


@dataclasses.dataclass(frozen=True)
class DecodeLayout:
    """How a rollout decodes: `chips` in groups of `tensor`, `slots` rows per group, paged or dense."""

    chips: int
    tensor: int
    slots: int  # per group
    paged: bool = True
    cache_dtype: str = "bfloat16"
    pool_positions: int | None = None  # per group (each chip holds 1/tensor of each position); None: no limit

    @property
    def groups(self) -> int:
        return self.chips // self.tensor


@dataclasses.dataclass(frozen=True)
class StepCost:
    seconds: float
    bound: str  # "hbm" | "flops" | "ici"
    hbm_bytes: float  # per chip
    flops: float  # per chip
    link_bytes: float  # per chip


class DecodeModel:
    """The per-step costs of one model on one chip type (see the module docstring)."""

    def __init__(self, model_config: ModelConfig, chip: Chip):
        self.config, self.chip = model_config, chip
        c = model_config
        self.matmul_params = c.num_params() - (0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size)
        self._weights: dict[int, tuple[int, int]] = {}

    def weights(self, tensor: int) -> tuple[int, int]:
        """(held, read) bytes of the decoding copy per chip."""
        if tensor not in self._weights:
            self._weights[tensor] = decode_weight_bytes(self.config, tensor)
        return self._weights[tensor]

    def step(self, layout: DecodeLayout, lengths: np.ndarray) -> StepCost:
        """One decode step; lengths `[groups, slots]` the cached positions of each slot's row (0: idle)."""
        c, t = self.config, layout.tensor
        _, read = self.weights(t)
        per_position = kv_bytes_per_position(c, layout.cache_dtype, t)
        heads = c.num_heads * kv_heads_per_device(c, t) // c.num_kv_heads
        slots = lengths.shape[1]
        attended = lengths.sum(axis=1) if layout.paged else np.full(len(lengths), slots * lengths.max(initial=0))
        hbm = read + per_position * attended
        flops = 2 * self.matmul_params / t * slots + 4 * c.num_layers * heads * c.head_dim * attended
        link = 0.0
        if t > 1:
            reduce = 2 * (t - 1) / t * slots * c.hidden_size * 2 * 2 * c.num_layers
            link = reduce + (t - 1) / t * slots * c.vocab_size * 4
        times = {
            "hbm": hbm / self.chip.hbm_bytes_per_s,
            "flops": flops / self.chip.peak_bf16_flops,
            "ici": np.full(len(lengths), link / self.chip.link_bytes_per_s),
        }
        slowest = int(np.argmax(np.max(np.stack(list(times.values())), axis=0)))
        per_kind = {kind: float(value[slowest]) for kind, value in times.items()}
        bound = max(per_kind, key=per_kind.get)
        return StepCost(per_kind[bound], bound, float(hbm[slowest]), float(flops[slowest]), float(link))

    def prefill_seconds(self, tokens: int, tensor: int) -> float:
        """A prefill of `tokens` prompt tokens on one group (compute bound; weights read once)."""
        flops = 2 * self.matmul_params * tokens / tensor
        return max(flops / self.chip.peak_bf16_flops, self.weights(tensor)[1] / self.chip.hbm_bytes_per_s)


@dataclasses.dataclass(frozen=True)
class RolloutEstimate:
    seconds: float  # the whole rollout phase
    decode_steps: int
    generated_tokens: int
    tokens_per_s_per_chip: float
    preempted_rows: int
    bounds: dict  # share of decode steps by bound


def paper_lengths(rows: int, budget: int, *, mean: float = 3000.0, at_budget: float = 0.05, seed: int = 0):
    """Response lengths like DeepMath-103K's under a reasoning model: `at_budget` of them at the budget
    (truncated), the rest log-normal (sigma 1) below it, the whole with mean `mean` (the log-normal's
    scale is found by bisection on the same draws)."""
    rng = np.random.RandomState(seed)
    normal = rng.standard_normal(rows * 4)
    capped = rng.choice(rows, max(1, round(at_budget * rows)), replace=False)

    def draw(scale: float) -> np.ndarray:
        values = np.exp(np.log(scale) - 0.5 + normal)
        values = values[values < budget][:rows]  # the log-normal truncated below the budget
        lengths = np.clip(np.round(values), 1, budget - 1).astype(int)
        lengths[capped] = budget
        return lengths

    low, high = 1.0, float(budget)
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if draw(middle).mean() < mean else (low, middle)
    return draw(low)


def simulate_rollout(
    model: DecodeModel,
    layout: DecodeLayout,
    *,
    prompt_length: int,
    lengths: np.ndarray,
    samples: int,
    steps_per_call: int = 8,
    shrink_tail: bool = True,
) -> RolloutEstimate:
    """The rollout phase of `len(lengths)` request rows (prompt-major, `samples` per prompt) on `layout`."""
    groups, steps = layout.groups, steps_per_call
    slots = layout.slots
    row = np.full((groups, slots), -1)
    held = np.zeros((groups, slots), np.int64)
    since = np.zeros((groups, slots), np.int64)
    generated = np.zeros((groups, slots), np.int64)
    pending = deque(range(len(lengths)))
    prefilled: set[int] = set()
    seconds = 0.0
    decode_steps = preempted = calls = 0
    bounds: dict[str, int] = {}
    pool = layout.pool_positions

    def free(g, s):
        row[g, s], held[g, s], generated[g, s] = -1, 0, 0

    while True:
        if pool is not None:  # pages for the next call; the latest rows give theirs back
            for g in range(groups):
                while np.where(row[g] >= 0, held[g] + steps, 0).sum() > pool:
                    victim = int(np.argmax(np.where(row[g] >= 0, since[g], -1)))
                    pending.appendleft(int(row[g, victim]))
                    free(g, victim)
                    preempted += 1
        new_prompts = 0
        while pending and (row < 0).any():  # refill: the group with the most free slots first
            g = int(np.argmax((row < 0).sum(axis=1)))
            if pool is not None and np.where(row[g] >= 0, held[g] + steps, 0).sum() + prompt_length + steps > pool:
                break
            s = int(np.argmax(row[g] < 0))
            r = pending.popleft()
            row[g, s], held[g, s], since[g, s], generated[g, s] = r, prompt_length - 1, calls, 0
            if r // samples not in prefilled:
                prefilled.add(r // samples)
                new_prompts += 1
        if new_prompts:
            seconds += model.prefill_seconds(new_prompts * prompt_length, layout.tensor)
        live = row >= 0
        if not live.any():
            break
        for _ in range(steps):
            cost = model.step(layout, np.where(row >= 0, held + 1, 0))
            seconds += cost.seconds
            bounds[cost.bound] = bounds.get(cost.bound, 0) + 1
            decode_steps += 1
            alive = row >= 0
            held[alive] += 1
            generated[alive] += 1
            done = alive & (generated >= np.where(alive, lengths[np.maximum(row, 0)], 0))
            row[done], held[done], generated[done] = -1, 0, 0
        calls += 1
        if shrink_tail and not pending:
            live_per_group = (row >= 0).sum(axis=1).max()
            while live_per_group and slots % 2 == 0 and slots // 2 >= live_per_group:
                order = np.argsort(row < 0, axis=1, kind="stable")[:, : slots // 2]
                row, held, since, generated = (np.take_along_axis(x, order, 1) for x in (row, held, since, generated))
                slots //= 2
                layout = dataclasses.replace(layout, slots=slots)
    tokens = int(lengths.sum())
    return RolloutEstimate(
        seconds=seconds,
        decode_steps=decode_steps,
        generated_tokens=tokens,
        tokens_per_s_per_chip=tokens / seconds / layout.chips,
        preempted_rows=preempted,
        bounds={k: v / decode_steps for k, v in bounds.items()},
    )


def steady_step(model: DecodeModel, layout: DecodeLayout, rows: int, positions: int) -> tuple[StepCost, int]:
    """A decode step with every slot busy (at most `rows` over the chips) at `positions` each, and the
    rows it decodes per group."""
    busy = min(layout.slots, -(-rows // layout.groups))
    lengths = np.zeros((layout.groups, layout.slots), np.int64)
    lengths[:, :busy] = positions
    return model.step(layout, lengths), busy
