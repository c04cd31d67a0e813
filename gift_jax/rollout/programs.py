"""The rollout's jitted programs and their abstract arguments, built in one place: `run_engine` runs
them, the compile-only fit check (`gift_jax.aot`) compiles the very same ones.

`engine_programs(model_config, sampling, shape, mesh)` binds the static settings (shapes, the token
and stop rules, decode steps per call, the mesh) to module-level jitted functions, so calls with the
same settings share one compilation:

- `init`: idle slots and empty outputs;
- `insert`: prefill a few prompts and place new rows, with the host's page table (state donated);
- `decode`: the host's page table and preemptions (`decode_step.schedule`), then
  `decode_steps_per_call` decode steps for every slot (state donated);
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
from gift_jax.parallel import batch_parallelism
from gift_jax.parallel.activations import activation_sharding
from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.decode_step import (
    DecodeState,
    EngineShape,
    decode_steps,
    decode_until_done,
    init_state,
    insert,
    schedule,
    shrink,
)
from gift_jax.rollout.token_sampling import TokenRule
from gift_jax.rollout.types import SamplingConfig, StopRule


class InsertBatch(NamedTuple):
    """The arguments of one `insert` (U prefilled prompts, E page writes, C page copies, M new rows;
    see `decode_step.insert`, built by `admission.Admission`)."""

    prefix_ids: jax.Array  # [U, W] int32
    prefix_mask: jax.Array  # [U, W] int32
    write_source: jax.Array  # [E] int32
    write_device: jax.Array  # [E] int32
    write_table: jax.Array  # [E, pages per slot] int32
    write_length: jax.Array  # [E] int32
    copy_device: jax.Array  # [C] int32
    copy_source: jax.Array  # [C] int32
    copy_target: jax.Array  # [C] int32
    slot: jax.Array  # [M] int32
    length: jax.Array  # [M] int32
    last_token: jax.Array  # [M] int32
    keys: jax.Array  # [M] PRNG keys
    row: jax.Array  # [M] int32
    budget: jax.Array  # [M] int32


@functools.partial(jax.jit, static_argnames=("model_config", "shape", "pad_id", "mesh"))
def init_program(*, model_config: ModelConfig, shape: EngineShape, pad_id: int, mesh: Mesh | None) -> DecodeState:
    return init_state(model_config, shape, pad_id, mesh)


@functools.partial(jax.jit, static_argnames=("pad_id", "mesh"), donate_argnames=("state",))
def insert_program(graphdef, params, state: DecodeState, batch: InsertBatch, table, *, pad_id: int, mesh):
    with activation_sharding(mesh):
        return insert(nnx.merge(graphdef, params), state, batch, table, pad_id)


@functools.partial(jax.jit, static_argnames=("token_rule", "stop_rule", "steps", "mesh"), donate_argnames=("state",))
def decode_program(
    graphdef, params, state: DecodeState, table, keep, *, token_rule: TokenRule, stop_rule: StopRule, steps: int, mesh
):
    with activation_sharding(mesh):
        state = schedule(state, table, keep)
        return decode_steps(nnx.merge(graphdef, params), state, token_rule, stop_rule, steps)


@functools.partial(jax.jit, static_argnames=("mesh",), donate_argnames=("pages",))
def shrink_program(pages, state: DecodeState, keep: jax.Array, mesh: Mesh | None) -> DecodeState:
    """`shrink` with the page pool donated apart from the rest: the pool comes back as it went in (no
    copy), while the slot vectors change shape (their buffers could not be reused anyway)."""
    return shrink(state.replace(cache=state.cache.replace(pages=pages)), keep, mesh)


@functools.partial(jax.jit, static_argnames=("model_config", "shape", "token_rule", "stop_rule", "mesh"))
def generate_program(
    graphdef,
    params,
    batch: InsertBatch,
    table,
    *,
    model_config: ModelConfig,
    shape: EngineShape,
    token_rule: TokenRule,
    stop_rule: StopRule,
    mesh: Mesh | None,
) -> DecodeState:
    with activation_sharding(mesh):
        model = nnx.merge(graphdef, params)
        state = init_state(model_config, shape, stop_rule.pad_id, mesh)
        state = insert(model, state, batch, table, stop_rule.pad_id)
        return decode_until_done(model, state, token_rule, stop_rule).replace(cache=None)  # the cache stays inside


def prefix_width(config: SamplingConfig, longest_prompt: int) -> int:
    """Bucketed width of the prefill: every prompt token but the last (the first decode step feeds it)."""
    return config.bucket(max(longest_prompt - 1, 1))


def engine_shape(
    config: SamplingConfig,
    *,
    slots: int,
    rows: int,
    longest_prompt: int,
    devices: int = 1,
    pages_per_device: int | None = None,
    backend: str = "xla",
) -> EngineShape:
    """The static sizes of a rollout of `rows` request rows, prompts of up to `longest_prompt` tokens.

    devices: the blocks the slots and the pool are split into. pages_per_device: each device's pool
    (scratch included); None: enough for every slot's longest row and its prompt's template page
    (`admission`): a row never waits for pages.
    """
    generation = config.bucket(config.max_new_tokens)
    pages_per_slot = -(-(prefix_width(config, longest_prompt) + generation) // config.page_size)
    if pages_per_device is None:  # each slot's longest row, a prompt template page per slot, scratch
        pages_per_device = slots // devices * (pages_per_slot + 1) + 1
    return EngineShape(
        slots=slots,
        rows=rows,
        max_new_bucket=generation,
        page_size=config.page_size,
        pages_per_slot=pages_per_slot,
        pages=devices * pages_per_device,
        cache_dtype=config.cache_dtype,
        backend=backend,
    )


def row_bucket(count: int, config: SamplingConfig) -> int:
    """Rows and prompts of an insert bucket from 1 up (1, 2, 4, ...): each padding row costs a full row."""
    return bucket_size(count, minimum=1, granularity=config.bucket_granularity)


def _without_pages(state: DecodeState) -> tuple:
    """`(pages, the state without them)`: the arguments of `shrink_program`."""
    return state.cache.pages, state.replace(cache=state.cache.replace(pages=()))


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
        return init_program(**self._init_options())

    def insert(self, graphdef, params, state: DecodeState, batch: InsertBatch, table) -> DecodeState:
        return insert_program(graphdef, params, state, batch, table, pad_id=self.stop_rule.pad_id, mesh=self.mesh)

    def decode(self, graphdef, params, state: DecodeState, table, keep) -> DecodeState:
        return decode_program(graphdef, params, state, table, keep, **self._decode_options())

    def shrink(self, state: DecodeState, keep) -> DecodeState:
        return shrink_program(*_without_pages(state), keep, self.mesh)

    def generate(self, graphdef, params, batch: InsertBatch, table) -> DecodeState:
        return generate_program(graphdef, params, batch, table, **self._generate_options())

    def _init_options(self) -> dict:
        return dict(model_config=self.model_config, shape=self.shape, pad_id=self.stop_rule.pad_id, mesh=self.mesh)

    def _decode_options(self) -> dict:
        return dict(token_rule=self.token_rule, stop_rule=self.stop_rule, steps=self.steps, mesh=self.mesh)

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
        shardings = init_program.lower(**self._init_options()).compile().output_shardings
        return jax.tree.map(_abstract, jax.eval_shape(lambda: init_program(**self._init_options())), shardings)

    def _host(self, shape, dtype) -> jax.ShapeDtypeStruct:
        """A host array's abstract form (replicated on the mesh, as jit places numpy arguments)."""
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(self.mesh, P()) if self.mesh else None)

    def abstract_table(self) -> jax.ShapeDtypeStruct:
        return self._host((self.shape.slots, self.shape.pages_per_slot), jnp.int32)

    def abstract_insert_batch(self, prompts: int, new_rows: int, width: int, writes: int) -> InsertBatch:
        """An insert of `new_rows` rows from `prompts` prefilled prompts of `width` tokens, `writes` page
        writes of them and a page copy per new row."""
        vector = functools.partial(self._host, dtype=jnp.int32)
        return InsertBatch(
            prefix_ids=self._host((prompts, width), jnp.int32),
            prefix_mask=self._host((prompts, width), jnp.int32),
            write_source=vector((writes,)),
            write_device=vector((writes,)),
            write_table=self._host((writes, self.shape.pages_per_slot), jnp.int32),
            write_length=vector((writes,)),
            copy_device=vector((new_rows,)),
            copy_source=vector((new_rows,)),
            copy_target=vector((new_rows,)),
            slot=vector((new_rows,)),
            length=vector((new_rows,)),
            last_token=vector((new_rows,)),
            keys=self._host((new_rows,), jax.random.key(0).dtype),
            row=vector((new_rows,)),
            budget=vector((new_rows,)),
        )

    def compile_targets(self, graphdef, params, *, prompts: int, new_rows: int, width: int, writes: int) -> dict:
        """`{name: (jitted, args, static kwargs)}` of the engine's programs as `run_engine` calls them:
        `decode`, `insert` (of `new_rows` rows from `prompts` prompts of `width` prefix tokens, with
        `writes` page writes) and,
        when the slots can halve, `shrink` at its first halving (the pool donated: it stays put).
        `params` may be abstract (sharded `ShapeDtypeStruct`s)."""
        state, table = self.abstract_state(), self.abstract_table()
        keep = self._host((self.shape.slots,), jnp.bool_)
        batch = self.abstract_insert_batch(prompts, new_rows, width, writes)
        targets = {
            "decode_k_steps": (decode_program, (graphdef, params, state, table, keep), self._decode_options()),
            "insert": (
                insert_program,
                (graphdef, params, state, batch, table),
                dict(pad_id=self.stop_rule.pad_id, mesh=self.mesh),
            ),
        }
        blocks = 1 if self.mesh is None else batch_parallelism(self.mesh)
        if self.shape.slots % (2 * blocks) == 0:
            halved = jax.ShapeDtypeStruct((self.shape.slots // 2,), jnp.int32, sharding=state.feed.sharding)
            targets["shrink"] = (shrink_program, (*_without_pages(state), halved), dict(mesh=self.mesh))
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
