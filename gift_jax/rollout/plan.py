"""The decode plan of a rollout, decided in one place for the engine and the fit check: the decode
mesh's tensor axis, the slots and the page pool.

- tensor (`SamplingConfig.decode_tensor`): a number, or "auto": on a chip of the datasheet table
  (`parallel.chips`) with its free memory known, the size (dividing the chips and the kv heads) whose
  steady decode step gives the most tokens per second by the roofline estimate (`roofline`), every
  slot busy at half its longest row, with the slots and pool that size leaves room for; elsewhere (a
  CPU) the mesh's own `tensor`.
- slots and pool (`SamplingConfig.max_concurrent_rows`): see `plan_cache`.
Memory is `(free, limit)` bytes per device *before* the decoding copy of the weights is made (the
training state and frozen base resident); the plan takes the copy's own share from it.
"""

from __future__ import annotations

import dataclasses

from gift_jax.models import ModelConfig
from gift_jax.parallel.chips import Chip
from gift_jax.rollout.bucketing import bucket_size
from gift_jax.rollout.layout import decode_tensor_choices, decode_weight_bytes
from gift_jax.rollout.roofline import DecodeLayout, DecodeModel, steady_step
from gift_jax.rollout.sizing import CacheSize, size_cache
from gift_jax.rollout.types import SamplingConfig

DEFAULT_CACHE_TOKENS = 2**20  # generated tokens the fixed rule's slots hold (~57 GB of bf16 cache at 7B)


def slots_for_budget(max_new_tokens: int, cache_tokens: int = DEFAULT_CACHE_TOKENS) -> int:
    """As many slots as `cache_tokens` generated tokens allow (e.g. 128 for an 8,192-token budget)."""
    return max(1, cache_tokens // max_new_tokens)


def default_slots(num_rows: int, blocks: int = 1) -> int:
    """`num_rows` slots rounded up to a multiple of `blocks` (each batch device gets as many)."""
    return -(-num_rows // blocks) * blocks


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    tensor: int  # of the decode mesh (1 without a mesh)
    slots: int  # over all devices
    pages_per_device: int | None  # None: a pool that holds every slot's longest row
    cache: CacheSize | None  # the memory-based sizing, when it ran
    weight_bytes_per_device: int  # the decoding copy

    def report(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_report(cls, report: dict) -> DecodePlan:
        cache = report["cache"]
        return cls(**{**report, "cache": CacheSize(**cache) if cache is not None else None})


def plan_cache(
    config: SamplingConfig,
    model_config: ModelConfig,
    *,
    rows: int,
    longest_row: int,
    blocks: int = 1,
    tensor: int = 1,
    memory: tuple[int, int] | None = None,
) -> tuple[int, int | None, CacheSize | None]:
    """`(slots, pages per device, the memory-based sizing)` of a rollout of `rows` request rows of up to
    `longest_row` cache positions, over `blocks` batch devices. Slots are a multiple of `blocks`.

    The static reference gives every row a slot (rows bucket from 1 up: 1, 2, 4, ...) and all its pages.
    "auto" with `memory` (`(free, limit)` bytes per device, the decoding copy already subtracted)
    sizes slots and pool from it (`sizing.size_cache`); without (a CPU), it holds
    `DEFAULT_CACHE_TOKENS` generated tokens.
    """
    if config.max_concurrent_rows is None:
        return default_slots(bucket_size(rows, minimum=1, granularity=config.bucket_granularity), blocks), None, None
    if config.max_concurrent_rows == "auto" and memory is not None:
        size = size_cache(
            model_config,
            rows=rows,
            longest_row=longest_row,
            page_size=config.page_size,
            cache_dtype=config.cache_dtype or model_config.dtype,
            free_bytes=memory[0],
            hbm_bytes=memory[1],
            blocks=blocks,
            tensor=tensor,
        )
        return size.slots, size.pages_per_device, size
    wanted = config.max_concurrent_rows
    if wanted == "auto":
        wanted = slots_for_budget(config.max_new_tokens)
    return default_slots(min(wanted, rows), blocks), config.pages_per_device, None


def plan_decode(
    config: SamplingConfig,
    model_config: ModelConfig,
    *,
    rows: int,
    longest_row: int,
    chips: int = 1,
    mesh_tensor: int = 1,
    memory: tuple[int, int] | None = None,
    chip: Chip | None = None,
) -> DecodePlan:
    """The decode plan (see the module docstring) over `chips` devices whose mesh has `mesh_tensor`.
    `model_config`: the decoding copy's (its dtype)."""
    if config.decode_tensor != "auto":
        tensor = config.decode_tensor or mesh_tensor
    elif memory is None or chip is None:
        tensor = mesh_tensor
    else:
        tensor = choose_tensor(
            config, model_config, rows=rows, longest_row=longest_row, chips=chips, memory=memory, chip=chip
        )
    held = decode_weight_bytes(model_config, tensor)[0]
    after = None if memory is None else (memory[0] - held, memory[1])
    slots, pages, size = plan_cache(
        config, model_config, rows=rows, longest_row=longest_row, blocks=chips // tensor, tensor=tensor, memory=after
    )
    return DecodePlan(tensor, slots, pages, size, held)


def choose_tensor(
    config: SamplingConfig,
    model_config: ModelConfig,
    *,
    rows: int,
    longest_row: int,
    chips: int,
    memory: tuple[int, int],
    chip: Chip,
) -> int:
    """The decode mesh's tensor size with the most estimated tokens/s (see the module docstring)."""
    model = DecodeModel(model_config, chip)
    best, best_rate = None, 0.0
    for tensor in decode_tensor_choices(model_config, chips):
        held = decode_weight_bytes(model_config, tensor)[0]
        try:
            slots, _, _ = plan_cache(
                config,
                model_config,
                rows=rows,
                longest_row=longest_row,
                blocks=chips // tensor,
                tensor=tensor,
                memory=(memory[0] - held, memory[1]),
            )
        except ValueError:  # this layout leaves no room for one row
            continue
        layout = DecodeLayout(
            chips=chips,
            tensor=tensor,
            slots=slots // (chips // tensor),
            cache_dtype=config.cache_dtype or model_config.dtype,
        )
        cost, busy = steady_step(model, layout, rows, longest_row // 2)
        rate = busy * layout.groups / cost.seconds
        if rate > best_rate * 1.001:  # a larger tensor must be clearly faster
            best, best_rate = tensor, rate
    if best is None:
        raise ValueError(
            f"rollout: no decode mesh over {chips} chips leaves room for one row of {longest_row} positions"
        )
    return best
