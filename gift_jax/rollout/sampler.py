"""Batched autoregressive sampling over the KV cache: one jitted prefill + `lax.while_loop` decode.

Two layers:
- `generate`: the pure jitted core, a function of `(graphdef, state, prompt arrays, rng, static
  options)`; the model is rebuilt with `nnx.merge` inside. Prompts are left-padded, so every row's
  last prompt token sits in the last column and all rows decode in lockstep: the prefill writes all
  prompt columns but the last into the cache, and each loop step feeds one token (first that last
  prompt column, then the token just drawn) and draws the next. Each row stops on its first stop
  token; the loop ends when every row has stopped or `max_new_tokens` is reached.
- `sample`: the Python-side wrapper. It takes lists of token ids, repeats each prompt
  `num_samples` times (prompt i's samples are rows `i * n ... i * n + n - 1`, which GRPO's group
  advantages rely on), left-pads, rounds every shape up to a bucket (`bucketing.py`) so that calls
  with similar sizes reuse one compilation, places the batch on the mesh, and returns numpy arrays.

The KV cache is allocated inside the jitted function and lives only in its `while_loop` carry, so
XLA updates it in place and frees it on return; no cache buffer crosses the call boundary (the
effect of donating it, without a cache argument). The model state is not donated: the caller keeps
using it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from gift_jax.models import KVCache, Transformer, init_cache
from gift_jax.models.decode_attention import cache_length
from gift_jax.parallel import batch_parallelism, fetch_global, logical_to_spec, place_global_batch
from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.token_sampling import TokenRule, choose_tokens, position_keys, row_keys


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """What to generate.

    max_new_tokens: generation budget per sequence (the stop token counts towards it).
    num_samples: samples per prompt (n), stored contiguously per prompt.
    temperature, top_k, top_p: see `TokenRule` (temperature 0 = greedy).
    stop_ids: token ids that end a sequence (EOS and friends; included in the completion).
    pad_id: fills prompt padding and the completion after its stop token.
    min_bucket, bucket_granularity: shape buckets for prompt width, generation length and rows.
    max_concurrent_rows: None decodes all rows as one static batch (`generate`); a number runs the
      continuous-batching engine (`engine.py`) with that many decode slots, the memory knob: the
      cache holds `max_concurrent_rows x (prompt bucket + generation bucket)` tokens. Results do not
      depend on it (rows are keyed by request, sample and position).
    decode_steps_per_call: engine only, tokens decoded per jitted call between scheduling rounds.
    cache_dtype: engine only, the KV cache's dtype (None: the model's compute dtype; "bfloat16"
      halves the cache of a float32 model at a small log-prob drift, see bench_rollouts.py).
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
    max_concurrent_rows: int | None = None
    decode_steps_per_call: int = 8
    cache_dtype: str | None = None
    shrink_tail: bool = True

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.max_concurrent_rows is not None and self.max_concurrent_rows < 1:
            raise ValueError(f"max_concurrent_rows must be >= 1 (or None), got {self.max_concurrent_rows}")
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

    def bucket(self, size: int, multiple: int = 1) -> int:
        return bucket_size(size, minimum=self.min_bucket, granularity=self.bucket_granularity, multiple=multiple)


class SampleResult(NamedTuple):
    """Sampled sequences as host numpy arrays; B = num_prompts * num_samples, grouped by prompt.

    prompt_ids: `[B, P]` int32, left-padded with pad_id (P is the bucketed prompt width).
    prompt_mask: `[B, P]` int32, 1 on real prompt tokens.
    completion_ids: `[B, N]` int32, right-padded with pad_id after the stop token
      (N = max_new_tokens).
    completion_mask: `[B, N]` int32, 1 on generated tokens, the stop token included.
    lengths: `[B]` int32, number of generated tokens (= completion_mask.sum(1)).
    truncated: `[B]` bool, reached max_new_tokens without a stop token.
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


class Generation(NamedTuple):
    """Device-side output of `generate` (N_b: bucketed generation length).

    tokens `[B, N_b]` int32, logprobs and entropies `[B, N_b]` float32, lengths `[B]` int32,
    stopped `[B]` bool.
    """

    tokens: jax.Array
    logprobs: jax.Array
    entropies: jax.Array
    lengths: jax.Array
    stopped: jax.Array


class _LoopState(NamedTuple):
    step: jax.Array  # [] int32, index of the token drawn next
    feed: jax.Array  # [B] int32, token to run through the model this step
    feed_mask: jax.Array  # [B] bool, whether `feed` is a real token (else padding)
    cache: KVCache
    tokens: jax.Array  # [B, N_b]
    logprobs: jax.Array  # [B, N_b]
    entropies: jax.Array  # [B, N_b]
    lengths: jax.Array  # [B]
    stopped: jax.Array  # [B] bool, drew a stop token
    done: jax.Array  # [B] bool, draws no more tokens (stopped, or a batch-padding row)


def is_stop(tokens: jax.Array, stop_ids: tuple[int, ...]) -> jax.Array:
    hit = jnp.zeros(tokens.shape, bool)
    for stop_id in stop_ids:
        hit = hit | (tokens == stop_id)
    return hit


def constrain_cache(cache: KVCache, mesh: Mesh) -> KVCache:
    """Rows of the cache on the mesh's batch axes, kv heads on `tensor` (where they divide)."""

    def place(x, logical):
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(logical, x.shape, mesh)))

    kv_axes = ("batch", "kv_heads", None, None)
    return KVCache(
        tuple(place(k, kv_axes) for k in cache.k),
        tuple(place(v, kv_axes) for v in cache.v),
        place(cache.key_mask, ("batch", None)),
        cache.index,
    )


@functools.partial(jax.jit, static_argnames=("rule", "stop_ids", "pad_id", "max_new_bucket", "mesh"))
def generate(
    graphdef,
    state,
    prompt_ids: jax.Array,
    prompt_mask: jax.Array,
    keys: jax.Array,
    budgets: jax.Array,
    *,
    rule: TokenRule,
    stop_ids: tuple[int, ...],
    pad_id: int,
    max_new_bucket: int,
    mesh: Mesh | None = None,
) -> Generation:
    """Prefill the left-padded prompts, then decode up to `max_new_tokens` tokens per row.

    Args:
      graphdef, state: `nnx.split(model)` of a `Transformer`.
      prompt_ids: `[B, P]` int32, left-padded; prompt_mask `[B, P]`, 1 on real tokens. A row with no
        real token is batch padding: it generates nothing.
      keys: `[B]` per-row PRNG keys (`token_sampling.row_keys`); row b's draw at step t uses
        `fold_in(keys[b], t)`.
      budgets: `[B]` int32, tokens row b may generate, at most `max_new_bucket` (traced, so budgets
        inside one bucket share a compilation).
      rule, stop_ids, pad_id: static decoding options.
      max_new_bucket: static width of the output buffers.
      mesh: when given, the cache is laid out over it like the batch (rows on the batch axes).
    Returns:
      `Generation`: tokens after a row's stop are pad_id, their log-probabilities 0.
    """
    model: Transformer = nnx.merge(graphdef, state)
    batch, width = prompt_ids.shape
    prompt_mask = prompt_mask.astype(bool)
    max_budget = jnp.max(budgets)
    cache = init_cache(model.config, batch, cache_length(width + max_new_bucket))
    if mesh is not None:
        cache = constrain_cache(cache, mesh)
    if width > 1:
        # Prefill all but the last prompt column; the loop's first step feeds that column. Only
        # the cache is kept, so XLA drops the `[B, P, V]` prefill logits (gigabytes at real sizes).
        _, cache = model.decode(prompt_ids[:, :-1], cache, attention_mask=prompt_mask[:, :-1])

    def keep_going(s: _LoopState):
        return (s.step < max_budget) & ~jnp.all(s.done)

    def draw_one(s: _LoopState) -> _LoopState:
        logits, cache = model.decode(s.feed[:, None], s.cache, attention_mask=s.feed_mask[:, None])
        choice = choose_tokens(logits[:, -1], position_keys(keys, s.step), rule)
        alive = ~s.done
        tokens = jnp.where(alive, choice.tokens, pad_id)
        logprobs = jnp.where(alive, choice.logprobs, 0.0)
        entropies = jnp.where(alive, choice.entropies, 0.0)
        hit_stop = alive & is_stop(tokens, stop_ids)
        lengths = s.lengths + alive.astype(jnp.int32)
        return _LoopState(
            step=s.step + 1,
            # Finished rows keep moving in lockstep; their pad token is fed as padding, never a key.
            feed=tokens,
            feed_mask=alive,
            cache=cache,
            tokens=jax.lax.dynamic_update_slice(s.tokens, tokens[:, None], (0, s.step)),
            logprobs=jax.lax.dynamic_update_slice(s.logprobs, logprobs[:, None], (0, s.step)),
            entropies=jax.lax.dynamic_update_slice(s.entropies, entropies[:, None], (0, s.step)),
            lengths=lengths,
            stopped=s.stopped | hit_stop,
            done=s.done | hit_stop | (lengths >= budgets),
        )

    start = _LoopState(
        step=jnp.zeros((), jnp.int32),
        feed=prompt_ids[:, -1].astype(jnp.int32),
        feed_mask=prompt_mask[:, -1],
        cache=cache,
        tokens=jnp.full((batch, max_new_bucket), pad_id, jnp.int32),
        logprobs=jnp.zeros((batch, max_new_bucket), jnp.float32),
        entropies=jnp.zeros((batch, max_new_bucket), jnp.float32),
        lengths=jnp.zeros((batch,), jnp.int32),
        stopped=jnp.zeros((batch,), bool),
        done=~jnp.any(prompt_mask, axis=1) | (budgets < 1),
    )
    end = jax.lax.while_loop(keep_going, draw_one, start)
    return Generation(end.tokens, end.logprobs, end.entropies, end.lengths, end.stopped)


def left_pad(sequences: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (`[len, width]` int32 ids left-padded with pad_id, `[len, width]` int32 mask)."""
    ids = np.full((len(sequences), width), pad_id, np.int32)
    mask = np.zeros((len(sequences), width), np.int32)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence) :] = sequence
            mask[row, width - len(sequence) :] = 1
    return ids, mask


def check_request(
    model_config, prompts: Sequence[Sequence[int]], config: SamplingConfig, budgets: Sequence[int] | None
) -> list[int]:
    """Validates prompts, stop / pad ids and per-prompt budgets -> the budget of each prompt."""
    if not prompts:
        raise ValueError("sample: no prompts given")
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"sample: prompt {row} is empty (every prompt needs at least one token)")
        low, high = min(prompt), max(prompt)
        if low < 0 or high >= model_config.vocab_size:
            raise ValueError(
                f"sample: prompt {row} holds token id {low if low < 0 else high}, outside "
                f"the model's vocabulary [0, {model_config.vocab_size})"
            )
    for stop_id in (*config.stop_ids, config.pad_id):
        if not 0 <= stop_id < model_config.vocab_size:
            raise ValueError(
                f"sample: stop / pad id {stop_id} is outside the vocabulary [0, {model_config.vocab_size})"
            )
    if budgets is None:
        return [config.max_new_tokens] * len(prompts)
    budgets = [int(b) for b in budgets]
    if len(budgets) != len(prompts):
        raise ValueError(f"sample: {len(budgets)} budgets for {len(prompts)} prompts")
    for row, budget in enumerate(budgets):
        if not 1 <= budget <= config.max_new_tokens:
            raise ValueError(
                f"sample: budget {budget} of prompt {row} is outside [1, max_new_tokens = {config.max_new_tokens}]"
            )
    return budgets


def request_indices(num_prompts: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """`[num_prompts * num_samples]` (prompt index, sample index) of each row, grouped by prompt."""
    return (
        np.repeat(np.arange(num_prompts, dtype=np.int32), num_samples),
        np.tile(np.arange(num_samples, dtype=np.int32), num_prompts),
    )


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
    """Host arrays of the real rows (`[R, >= max_new_tokens]`, request order) -> `SampleResult`.

    budgets: `[R]` each row's generation budget (a row that reached it without stopping is truncated).
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


def sample(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    rng: jax.Array,
    *,
    mesh: Mesh | None = None,
    budgets: Sequence[int] | None = None,
) -> SampleResult:
    """Samples `config.num_samples` completions for each prompt.

    Runs the continuous-batching engine when `config.max_concurrent_rows` is set, else one static
    batch; both give the same rows (draws keyed by prompt, sample and position).

    Args:
      model: the policy (its parameters may be sharded over `mesh`).
      prompts: token-id lists of any lengths (each non-empty).
      config: decoding options.
      rng: PRNG key; sample j of prompt i draws its token t from
        `fold_in(fold_in(fold_in(rng, i), j), t)`.
      mesh: when given, rows are split over its batch axes (the row count is padded to a multiple).
        With several processes, every process passes the same prompts and receives all rows.
      budgets: optional per-prompt generation budgets (each in [1, max_new_tokens]); a row that
        reaches its budget without a stop token is truncated there.
    Returns:
      `SampleResult` with `len(prompts) * num_samples` rows, prompt i's samples at rows
      `i * n ... i * n + n - 1`.
    """
    if config.max_concurrent_rows is not None:
        from gift_jax.rollout.engine import sample_continuous  # the engine builds on this module

        return sample_continuous(model, prompts, config, rng, mesh=mesh, budgets=budgets)
    return sample_static(model, prompts, config, rng, mesh=mesh, budgets=budgets)


def sample_static(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    rng: jax.Array,
    *,
    mesh: Mesh | None = None,
    budgets: Sequence[int] | None = None,
) -> SampleResult:
    """`sample` as one static batch: every row's cache allocated up front, decoded in lockstep."""
    prompt_budgets = check_request(model.config, prompts, config, budgets)
    rows = [list(prompt) for prompt in prompts for _ in range(config.num_samples)]
    real = len(rows)
    multiple = batch_parallelism(mesh) if mesh is not None else 1
    # Rows bucket from 1 up (1, 2, 4, ...): unlike lengths, every padding row costs a full row of work.
    num_rows = bucket_size(real, minimum=1, granularity=config.bucket_granularity, multiple=multiple)
    width = config.bucket(max(len(row) for row in rows))
    max_new_bucket = config.bucket(config.max_new_tokens)
    ids, mask = left_pad(rows + [[]] * (num_rows - real), width, config.pad_id)
    requests, samples = request_indices(len(prompts), config.num_samples)
    pad = num_rows - real
    requests, samples = np.pad(requests, (0, pad)), np.pad(samples, (0, pad))
    row_budgets = np.pad(np.repeat(np.asarray(prompt_budgets, np.int32), config.num_samples), (0, pad))

    host = (ids, mask, requests, samples, row_budgets)
    device_ids, device_mask, requests, samples, device_budgets = (
        host if mesh is None else place_global_batch(host, mesh)
    )
    out = generate(
        *nnx.split(model),
        device_ids,
        device_mask,
        row_keys(rng, requests, samples),
        device_budgets,
        rule=config.token_rule(),
        stop_ids=config.stop_ids,
        pad_id=config.pad_id,
        max_new_bucket=max_new_bucket,
        mesh=mesh,
    )
    out = fetch_global(out)  # every process gets every row
    return assemble_result(
        rows,
        config,
        out.tokens[:real],
        out.logprobs[:real],
        out.entropies[:real],
        out.lengths[:real],
        out.stopped[:real],
        np.asarray(row_budgets)[:real],
    )
