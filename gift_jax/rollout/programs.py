"""The rollout's jitted programs and their abstract arguments, built in one place: `run_engine` runs
them, the compile-only fit check (`gift_jax.aot`) compiles the very same ones.

`engine_programs(model_config, sampling, shape, mesh)` binds the static settings (shapes, the token
and stop rules, decode steps per call, the mesh) to module-level jitted functions, so calls with the
same settings share one compilation:

- `init`: idle slots and empty outputs;
- `insert`: prefill a few prompts and place new rows (state donated);
- `decode`: `decode_steps_per_call` decode steps for every slot (state donated);
- `shrink`: the live slots moved into fewer;
- `generate`: the static reference, init + insert of every row + decode until all stop, as one
  program (the cache never leaves it: the state comes back without it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gift_jax.models import ModelConfig
from gift_jax.models.decode_attention import cache_length
from gift_jax.parallel import batch_parallelism
from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.decode_step import (
    DecodeState,
    EngineShape,
    decode_steps,
    decode_until_done,
    init_state,
    insert,
    shrink,
)
from gift_jax.rollout.token_sampling import TokenRule
from gift_jax.rollout.types import SamplingConfig, StopRule


class InsertBatch(NamedTuple):
    """The arguments of one `insert` (U prefilled prompts, M new rows; see `decode_step.insert`)."""

    prefix_ids: jax.Array  # [U, W] int32
    prefix_mask: jax.Array  # [U, W] int32
    source: jax.Array  # [M] int32
    slot: jax.Array  # [M] int32
    last_token: jax.Array  # [M] int32
    keys: jax.Array  # [M] PRNG keys
    row: jax.Array  # [M] int32
    budget: jax.Array  # [M] int32


@functools.partial(jax.jit, static_argnames=("model_config", "shape", "pad_id", "mesh"))
def init_program(*, model_config: ModelConfig, shape: EngineShape, pad_id: int, mesh: Mesh | None) -> DecodeState:
    return init_state(model_config, shape, pad_id, mesh)


@functools.partial(jax.jit, donate_argnames=("state",))
def insert_program(graphdef, params, state: DecodeState, batch: InsertBatch) -> DecodeState:
    return insert(nnx.merge(graphdef, params), state, *batch)


@functools.partial(jax.jit, static_argnames=("token_rule", "stop_rule", "steps"), donate_argnames=("state",))
def decode_program(graphdef, params, state: DecodeState, *, token_rule: TokenRule, stop_rule: StopRule, steps: int):
    return decode_steps(nnx.merge(graphdef, params), state, token_rule, stop_rule, steps)


@functools.partial(jax.jit, static_argnames=("mesh",))
def shrink_program(state: DecodeState, keep: jax.Array, mesh: Mesh | None) -> DecodeState:
    return shrink(state, keep, mesh)


@functools.partial(jax.jit, static_argnames=("model_config", "shape", "token_rule", "stop_rule", "mesh"))
def generate_program(
    graphdef,
    params,
    batch: InsertBatch,
    *,
    model_config: ModelConfig,
    shape: EngineShape,
    token_rule: TokenRule,
    stop_rule: StopRule,
    mesh: Mesh | None,
) -> DecodeState:
    model = nnx.merge(graphdef, params)
    state = insert(model, init_state(model_config, shape, stop_rule.pad_id, mesh), *batch)
    return decode_until_done(model, state, token_rule, stop_rule).replace(cache=None)  # the cache stays inside


def prefix_width(config: SamplingConfig, longest_prompt: int) -> int:
    """Bucketed width of the prefill: every prompt token but the last (the first decode step feeds it)."""
    return config.bucket(max(longest_prompt - 1, 1))


def engine_shape(config: SamplingConfig, *, slots: int, rows: int, longest_prompt: int) -> EngineShape:
    """The static sizes of a rollout of `rows` request rows, prompts of up to `longest_prompt` tokens."""
    generation = config.bucket(config.max_new_tokens)
    return EngineShape(
        slots=slots,
        max_len=cache_length(prefix_width(config, longest_prompt) + generation),
        rows=rows,
        max_new_bucket=generation,
        cache_dtype=config.cache_dtype,
    )


def row_bucket(count: int, config: SamplingConfig) -> int:
    """Rows and prompts of an insert bucket from 1 up (1, 2, 4, ...): each padding row costs a full row."""
    return bucket_size(count, minimum=1, granularity=config.bucket_granularity)


def _abstract(x, sharding):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


@dataclasses.dataclass(frozen=True)
class EnginePrograms:
    """The jitted programs of one rollout's static settings (see the module docstring)."""

    model_config: ModelConfig
    shape: EngineShape
    token_rule: TokenRule
    stop_rule: StopRule
    steps: int
    mesh: Mesh | None

    def init(self) -> DecodeState:
        return init_program(
            model_config=self.model_config, shape=self.shape, pad_id=self.stop_rule.pad_id, mesh=self.mesh
        )

    def insert(self, graphdef, params, state: DecodeState, batch: InsertBatch) -> DecodeState:
        return insert_program(graphdef, params, state, batch)

    def decode(self, graphdef, params, state: DecodeState) -> DecodeState:
        return decode_program(graphdef, params, state, **self._decode_options())

    def shrink(self, state: DecodeState, keep) -> DecodeState:
        return shrink_program(state, keep, self.mesh)

    def generate(self, graphdef, params, batch: InsertBatch) -> DecodeState:
        return generate_program(graphdef, params, batch, **self._generate_options())

    def _decode_options(self) -> dict:
        return dict(token_rule=self.token_rule, stop_rule=self.stop_rule, steps=self.steps)

    def _generate_options(self) -> dict:
        return dict(
            model_config=self.model_config,
            shape=self.shape,
            token_rule=self.token_rule,
            stop_rule=self.stop_rule,
            mesh=self.mesh,
        )

    # -- abstract arguments, for compiling without running (`gift_jax.aot`) ------------------------
    def abstract_state(self) -> DecodeState:
        """The state as sharded `ShapeDtypeStruct`s, laid out as `init` lays it out."""
        options = dict(model_config=self.model_config, shape=self.shape, pad_id=self.stop_rule.pad_id, mesh=self.mesh)
        shardings = init_program.lower(**options).compile().output_shardings
        return jax.tree.map(_abstract, jax.eval_shape(lambda: init_program(**options)), shardings)

    def abstract_insert_batch(self, prompts: int, new_rows: int, width: int) -> InsertBatch:
        """An insert of `new_rows` rows copied from `prompts` prefilled prompts of `width` tokens."""
        sharding = NamedSharding(self.mesh, P()) if self.mesh is not None else None

        def host(shape, dtype):
            return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

        return InsertBatch(
            host((prompts, width), jnp.int32),
            host((prompts, width), jnp.int32),
            *(host((new_rows,), jnp.int32) for _ in range(3)),
            host((new_rows,), jax.random.key(0).dtype),
            *(host((new_rows,), jnp.int32) for _ in range(2)),
        )

    def compile_targets(self, graphdef, params, *, prompts: int, new_rows: int, width: int) -> dict:
        """`{name: (jitted, args, static kwargs)}` of the engine's programs as `run_engine` calls them:
        `decode`, `insert` (of `new_rows` rows from `prompts` prompts of `width` prefix tokens) and,
        when the slots can halve, `shrink` at its first halving (the state is held twice then).
        `params` may be abstract (sharded `ShapeDtypeStruct`s)."""
        state = self.abstract_state()
        targets = {
            "decode_k_steps": (decode_program, (graphdef, params, state), self._decode_options()),
            "insert": (
                insert_program,
                (graphdef, params, state, self.abstract_insert_batch(prompts, new_rows, width)),
                {},
            ),
        }
        blocks = 1 if self.mesh is None else batch_parallelism(self.mesh)
        if self.shape.slots % (2 * blocks) == 0:
            keep = jax.ShapeDtypeStruct((self.shape.slots // 2,), jnp.int32, sharding=state.feed.sharding)
            targets["shrink"] = (shrink_program, (state, keep), dict(mesh=self.mesh))
        return targets


def engine_programs(
    model_config: ModelConfig, config: SamplingConfig, shape: EngineShape, mesh: Mesh | None = None
) -> EnginePrograms:
    """The programs of a rollout with `config`'s token and stop rules and `shape`'s sizes."""
    return EnginePrograms(
        model_config=model_config,
        shape=shape,
        token_rule=config.token_rule(),
        stop_rule=config.stop_rule(),
        steps=config.decode_steps_per_call,
        mesh=mesh,
    )
