"""What a rollout is asked for and what it gives back: the sampling config, the result, the request
checks, the stop rule and the decode cache's sharding constraints.

Names used across `gift_jax.rollout`: a *request row* is one (prompt, sample) pair, R of them per call,
grouped by prompt (prompt i's samples are rows `i * n ... i * n + n - 1`, which GRPO's group advantages
rely on); a *slot* is a decode row, one of the S rows that the decode step advances together (the
engine refills a slot with the next request row when its row finishes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gift_jax.models import ModelConfig
from gift_jax.models.paged_attention import PagedKVCache, pool_specs
from gift_jax.parallel import logical_to_spec
from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.token_sampling import TokenRule


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """What to generate, and how the engine schedules it.

    max_new_tokens: generation budget per sequence (the stop token counts towards it).
    num_samples: samples per prompt (n), stored contiguously per prompt.
    temperature, top_k, top_p: see `TokenRule` (temperature 0 = greedy).
    stop_ids: token ids that end a sequence (EOS and friends; included in the completion).
    pad_id: fills prompt padding and the completion after its stop token.
    min_bucket, bucket_granularity: shape buckets for prompt width, generation length and rows.
    max_concurrent_rows: the slots (decode rows) of the engine, i.e. the memory knob: the cache holds
      `max_concurrent_rows x (prompt bucket + generation bucket)` tokens. "auto": slots and page pool
      sized from the free device memory (`sizing`). None runs the static reference instead: every request row in its own
      slot, decoded in one program until all stop. Results do not depend on it (rows are keyed by
      request, sample and position).
    decode_steps_per_call: engine only, tokens decoded per jitted call between scheduling rounds.
    page_size: positions per page of the paged KV cache (`models.paged_attention`): a row holds
      `ceil(tokens / page_size)` pages, handed out as it grows and taken back when it stops.
    pages_per_device: engine only, each device's page pool (one scratch page included). None: enough
      for every slot's longest row, so no row ever waits for pages. Fewer: memory follows the tokens
      held, and when a device runs out its latest rows give their pages back and are redone.
    decode_tensor: on a mesh, the tensor axis of the decode mesh (`layout.decode_mesh`: the same
      devices as `(1, N / t, t)`); "auto": chosen by the roofline estimate on known chips, else the
      mesh's own (`plan`); None: the mesh's own.
    cache_dtype: the KV cache's dtype (None: the model's compute dtype; "bfloat16" halves the cache
      of a float32 model at a small log-prob drift, see bench_rollouts.py).
    shrink_tail: engine only, once no request waits, move the live rows into half as many slots
      whenever they fit (repeatedly), so a tail of a few long rows stops decoding idle slots. Costs
      one more decode compilation per slot count (log2 of the slots at most); results unchanged.
    """

    max_new_tokens: int
    num_samples: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0
    min_bucket: int = 16
    bucket_granularity: int = 512
    max_concurrent_rows: int | Literal["auto"] | None = None
    decode_steps_per_call: int = 8
    page_size: int = 64
    pages_per_device: int | None = None
    decode_tensor: int | Literal["auto"] | None = "auto"
    cache_dtype: str | None = None
    shrink_tail: bool = True

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        slots = self.max_concurrent_rows
        if slots not in (None, "auto") and not (isinstance(slots, int) and slots >= 1):
            raise ValueError(f"max_concurrent_rows must be >= 1, 'auto' or None, got {slots!r}")
        if self.decode_tensor not in (None, "auto") and not (
            isinstance(self.decode_tensor, int) and self.decode_tensor >= 1
        ):
            raise ValueError(f"decode_tensor must be >= 1, 'auto' or None, got {self.decode_tensor!r}")
        if self.page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {self.page_size}")
        if self.pages_per_device is not None and self.pages_per_device < 2:
            raise ValueError(f"pages_per_device must be >= 2 (scratch + one), got {self.pages_per_device}")
        if self.decode_steps_per_call < 1:
            raise ValueError(f"decode_steps_per_call must be >= 1, got {self.decode_steps_per_call}")
        if self.cache_dtype is not None:
            try:
                jnp.dtype(self.cache_dtype)
            except TypeError as err:
                raise ValueError(f"cache_dtype {self.cache_dtype!r} is not a dtype name (e.g. 'bfloat16')") from err
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))
        self.token_rule()  # validates temperature / top-k / top-p

    def token_rule(self) -> TokenRule:
        return TokenRule(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

    def stop_rule(self) -> StopRule:
        return StopRule(stop_ids=self.stop_ids, pad_id=self.pad_id)

    def bucket(self, size: int, multiple: int = 1) -> int:
        return bucket_size(size, minimum=self.min_bucket, granularity=self.bucket_granularity, multiple=multiple)


@dataclasses.dataclass(frozen=True)
class StopRule:
    """When a row ends (hashable: a static jit argument): on its first token in `stop_ids` (kept in
    the completion); after it, the row's outputs are `pad_id` with log-probability 0."""

    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0

    def hits(self, tokens: jax.Array) -> jax.Array:
        """`[...]` bool: which of `tokens` (int `[...]`) are stop tokens."""
        hit = jnp.zeros(tokens.shape, bool)
        for stop_id in self.stop_ids:
            hit = hit | (tokens == stop_id)
        return hit


class SampleResult(NamedTuple):
    """Sampled sequences as host numpy arrays; B = num_prompts * num_samples, grouped by prompt.

    prompt_ids: `[B, P]` int32, left-padded with pad_id (P is the bucketed prompt width).
    prompt_mask: `[B, P]` int32, 1 on real prompt tokens.
    completion_ids: `[B, N]` int32, right-padded with pad_id after the stop token
      (N = max_new_tokens).
    completion_mask: `[B, N]` int32, 1 on generated tokens, the stop token included.
    lengths: `[B]` int32, number of generated tokens (= completion_mask.sum(1)).
    truncated: `[B]` bool, reached its budget without a stop token.
    logprobs: `[B, N]` float32, log-probability of each sampled token under
      `log_softmax(logits / temperature)` (before top-k / top-p; temperature 1 when greedy);
      0 on padding. See `token_sampling`.
    entropies: `[B, N]` float32, entropy (nats) of that same distribution at each generated
      position; 0 on padding.
    """

    prompt_ids: np.ndarray
    prompt_mask: np.ndarray
    completion_ids: np.ndarray
    completion_mask: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray
    logprobs: np.ndarray
    entropies: np.ndarray


def constrain_cache(cache: PagedKVCache, mesh: Mesh) -> PagedKVCache:
    """The cache on the mesh: slots and each device's pool over the batch axes, kv heads over `tensor`
    when it divides them (as the per-device attention reads them, `models.paged_attention`)."""
    specs = pool_specs(cache.backend, mesh, cache.kv_heads)

    def place(x, spec):
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    rows = logical_to_spec(("batch", None), cache.page_table.shape, mesh)
    return cache.replace(
        pages=tuple(tuple(place(x, spec) for x, spec in zip(layer, specs, strict=True)) for layer in cache.pages),
        page_table=place(cache.page_table, rows),
        lengths=place(cache.lengths, P(rows[0])),
    )


def check_request(
    model_config: ModelConfig,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    budgets: Sequence[int] | None,
) -> list[int]:
    """Validates prompts, stop / pad ids and per-prompt budgets -> the budget of each prompt."""
    if not prompts:
        raise ValueError("rollout: no prompts given")
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"rollout: prompt {row} is empty (every prompt needs at least one token)")
        low, high = min(prompt), max(prompt)
        if low < 0 or high >= model_config.vocab_size:
            raise ValueError(
                f"rollout: prompt {row} holds token id {low if low < 0 else high}, outside "
                f"the model's vocabulary [0, {model_config.vocab_size})"
            )
    for stop_id in (*config.stop_ids, config.pad_id):
        if not 0 <= stop_id < model_config.vocab_size:
            raise ValueError(
                f"rollout: stop / pad id {stop_id} is outside the vocabulary [0, {model_config.vocab_size})"
            )
    if budgets is None:
        return [config.max_new_tokens] * len(prompts)
    budgets = [int(b) for b in budgets]
    if len(budgets) != len(prompts):
        raise ValueError(f"rollout: {len(budgets)} budgets for {len(prompts)} prompts")
    for row, budget in enumerate(budgets):
        if not 1 <= budget <= config.max_new_tokens:
            raise ValueError(
                f"rollout: budget {budget} of prompt {row} is outside [1, max_new_tokens = {config.max_new_tokens}]"
            )
    return budgets


def request_indices(num_prompts: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """`[num_prompts * num_samples]` (prompt index, sample index) of each request row, grouped by prompt."""
    return (
        np.repeat(np.arange(num_prompts, dtype=np.int32), num_samples),
        np.tile(np.arange(num_samples, dtype=np.int32), num_prompts),
    )


def left_pad(sequences: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (`[len, width]` int32 ids left-padded with pad_id, `[len, width]` int32 mask)."""
    ids = np.full((len(sequences), width), pad_id, np.int32)
    mask = np.zeros((len(sequences), width), np.int32)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence) :] = sequence
            mask[row, width - len(sequence) :] = 1
    return ids, mask


def assemble_result(
    rows: Sequence[Sequence[int]],
    config: SamplingConfig,
    tokens: np.ndarray,
    logprobs: np.ndarray,
    entropies: np.ndarray,
    lengths: np.ndarray,
    stopped: np.ndarray,
    budgets: np.ndarray,
) -> SampleResult:
    """Host arrays of the request rows (`[R, >= max_new_tokens]`, request order) -> `SampleResult`.

    rows: each request row's prompt. budgets: `[R]` each row's generation budget (a row that reached
    it without stopping is truncated).
    """
    n = config.max_new_tokens
    ids, mask = left_pad(rows, config.bucket(max(len(row) for row in rows)), config.pad_id)
    lengths = lengths.astype(np.int32)
    completion_mask = (np.arange(n)[None, :] < lengths[:, None]).astype(np.int32)
    return SampleResult(
        prompt_ids=ids,
        prompt_mask=mask,
        completion_ids=tokens[:, :n].astype(np.int32),
        completion_mask=completion_mask,
        lengths=lengths,
        truncated=~stopped & (lengths >= budgets),
        logprobs=logprobs[:, :n].astype(np.float32),
        entropies=entropies[:, :n].astype(np.float32),
    )
