"""RL algorithms by name: plain GRPO and the unified baselines LUFFY and ReLIFT.

An algorithm supplies only what differs from GRPO: how many rollouts a prompt gets, how the batch
is augmented (LUFFY appends each prompt's expert solution as an off-policy group member), and what
runs after the step's updates (ReLIFT buffers questions whose rollouts all failed and, once
`algo.relift_batch` are collected, takes one SFT update on their expert solutions). Python-side
state (ReLIFT's buffer) lives in the algorithm object and travels in the checkpoint metadata.
Adding an algorithm is one class here with `@register`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import numpy as np

from gift_jax.data import build_sft_examples, collate_sft_batch
from gift_jax.parallel import place_global_batch
from gift_jax.rl.rollouts import completion_arrays, group_correctness, insert_expert_rows
from gift_jax.rollout import SampleResult, bucket_size
from gift_jax.runtime.demonstrations import DemonstrationStepConfig, demonstration_step
from gift_jax.runtime.optim import hold_schedule_position
from gift_jax.runtime.run import jit_update
from gift_jax.runtime.train_state import TrainState

ALGORITHMS: dict[str, type[GRPO]] = {}


def register(cls):
    ALGORITHMS[cls.name] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class RLContext:
    """What the stage hands an algorithm when it builds it."""

    config: Any  # RLStageConfig
    tokenizer: Any  # ChatTokenizer
    mesh: Any
    graphdef: Any
    tx: Any
    state: TrainState  # the initial state: its layout (shardings) for jitted updates
    param_shardings: Any
    sizes: Any  # RLSizes
    records: list[dict]


@register
class GRPO:
    """On-policy GRPO (the paper's RL stage); the base of the others."""

    name: ClassVar[str] = "grpo"
    reads_expert: ClassVar[bool] = False  # train_file must have data.expert_key
    expert_rows: ClassVar[bool] = False  # the update batch carries is_expert rows

    def __init__(self, ctx: RLContext):
        self.ctx = ctx

    @classmethod
    def size_problems(cls, algo, *, batch_devices: int) -> list[str]:
        """Config problems that depend on the device count (messages naming the keys)."""
        return []

    @classmethod
    def samples_per_prompt(cls, group_size: int) -> int:
        return group_size

    def augment(self, result: SampleResult, records: list[dict]) -> tuple[SampleResult, np.ndarray | None, dict]:
        """`(rollouts with any added rows, [B] is_expert or None, host metrics)`."""
        return result, None, {}

    def after_update(self, state: TrainState, records: list[dict], rewards: np.ndarray) -> tuple[TrainState, dict]:
        """Runs after the step's PPO updates -> `(state, host metrics)`."""
        return state, {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, meta: dict) -> None:
        pass


@register
class LUFFY(GRPO):
    """Each group = `group_size - 1` rollouts + the expert solution, trained with policy shaping."""

    name = "luffy"
    reads_expert = True
    expert_rows = True

    @classmethod
    def samples_per_prompt(cls, group_size: int) -> int:
        return group_size - 1

    def augment(self, result, records):
        c, tokenizer = self.ctx.config, self.ctx.tokenizer
        width = c.rollout.max_new_tokens
        expert = [tokenizer.encode(rec[c.data.expert_key]) + [tokenizer.eos_id] for rec in records]
        cut = np.array([len(tokens) > width for tokens in expert])
        expert_ids, expert_mask = completion_arrays(expert, width, tokenizer.pad_id)
        result, is_expert = insert_expert_rows(result, expert_ids, expert_mask, c.rollout.group_size - 1, cut)
        return result, is_expert, {"expert_truncated_frac": float(cut.mean())}


def _sft_update(state: TrainState, batch, *, graphdef, tx, config: DemonstrationStepConfig, param_shardings):
    """An SFT update that leaves the learning-rate schedule where it was (it is sized for the RL updates)."""
    new_state, metrics = demonstration_step(
        state,
        None,
        batch,
        graphdef=graphdef,
        base_graphdef=graphdef,
        tx=tx,
        config=config,
        param_shardings=param_shardings,
    )
    return new_state._replace(opt_state=hold_schedule_position(new_state.opt_state, state.opt_state)), metrics


@register
class ReLIFT(GRPO):
    """GRPO plus one SFT update on the expert solutions of every `relift_batch` all-fail questions."""

    name = "relift"
    reads_expert = True

    @classmethod
    def size_problems(cls, algo, *, batch_devices):
        if algo.relift_batch % batch_devices:
            return [f"algo.relift_batch={algo.relift_batch} is not divisible by batch devices ({batch_devices})"]
        return []

    def __init__(self, ctx: RLContext):
        super().__init__(ctx)
        c = ctx.config
        self.buffer: list[tuple[str, str]] = []
        self.max_length = (
            max(len(ctx.tokenizer.encode_prompt(rec[c.data.prompt_key])) for rec in ctx.records)
            + c.rollout.max_new_tokens
        )
        step_config = DemonstrationStepConfig("sft", chunk_size=c.algo.chunk_size, num_micro=ctx.sizes.relift_micro)
        self.sft_fn = jit_update(
            functools.partial(
                _sft_update, graphdef=ctx.graphdef, tx=ctx.tx, config=step_config, param_shardings=ctx.param_shardings
            ),
            ctx.state,
            ctx.mesh,
        )

    def after_update(self, state, records, rewards):
        c, tokenizer = self.ctx.config, self.ctx.tokenizer
        failed = ~group_correctness(rewards, c.rollout.group_size).any(axis=1)  # no rollout of the prompt correct
        pairs = [(rec[c.data.prompt_key], rec[c.data.expert_key]) for rec in records]
        self.buffer += [pair for pair, bad in zip(pairs, failed, strict=True) if bad]
        if len(self.buffer) < c.algo.relift_batch:
            return state, {}
        pairs, self.buffer = self.buffer[: c.algo.relift_batch], self.buffer[c.algo.relift_batch :]
        examples = list(build_sft_examples(pairs, tokenizer, max_length=self.max_length))
        if not examples:
            return state, {}
        # Dropped pairs become padding rows (all-zero masks) so the batch keeps its size; the length is
        # bucketed to limit recompiles.
        rows = [(e.token_ids, e.loss_mask) for e in examples] + [None] * (len(pairs) - len(examples))
        width = bucket_size(max(len(e.token_ids) for e in examples) - 1, minimum=64)
        state, metrics = self.sft_fn(
            state, place_global_batch(collate_sft_batch(rows, width, tokenizer.pad_id), self.ctx.mesh)
        )
        return state, {"relift_sft_nll": float(metrics["nll"])}

    def state_dict(self):
        return {"relift_buffer": self.buffer}

    def load_state_dict(self, meta):
        self.buffer = [tuple(x) for x in meta.get("relift_buffer", [])]
