"""Configuration of the on-policy RL stage (GRPO, and the unified baselines LUFFY / ReLIFT).

Section ranges are checked when the config is loaded; `validate_rl_config` adds the checks that need
the device count or the file system and returns the derived sizes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from gift_jax.config_io import ConfigError
from gift_jax.losses import DEFAULT_CHUNK_SIZE
from gift_jax.parallel import MeshConfig
from gift_jax.rl.algorithms import ALGORITHMS
from gift_jax.rl.grpo import LUFFY_GAMMA, AggMode, KLKind
from gift_jax.rl.policy_losses import POLICY_LOSSES, resolve_policy_loss
from gift_jax.rl.rollout_correction import CorrectionLevel, CorrectionMode, correction_problems
from gift_jax.runtime.config import (
    ModelSection,
    RunSection,
    placement_problems,
    require_at_least,
)
from gift_jax.runtime.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class RLDataSection:
    RESUMABLE: ClassVar[tuple[str, ...]] = ("val_limit",)  # may change on resume (runtime.workdir.check_resume)

    train_file: str  # RL prompts with reference answers (parquet / jsonl)
    val_file: str | None = None  # validation problems (avg@k during RL): this file's layout or a benchmark's
    prompt_key: str = "prompt"
    answer_key: str = "answer"
    expert_key: str = "solution"  # LUFFY / ReLIFT: the expert demonstration column of train_file
    val_limit: int | None = None  # evaluate on the first N validation problems

    def __post_init__(self):
        require_at_least(self, 1, "val_limit")


@dataclasses.dataclass(frozen=True)
class RolloutSection:
    group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 8192
    # Engine decode slots; "auto": slots and KV page pool sized from the HBM left after the resident
    # state (gift_jax.rollout.sizing).
    max_concurrent_rows: int | Literal["auto"] = "auto"
    page_size: int = 64  # positions per page of the paged KV cache
    # Tensor axis of the decode mesh (the same devices as (1, N / t, t)); "auto": the roofline estimate's
    # pick on known chips, else mesh.tensor (gift_jax.rollout.plan).
    decode_tensor: int | Literal["auto"] = "auto"
    shrink_tail: bool = True  # once no prompt waits, halve the engine's slots as rows finish (SamplingConfig)

    def __post_init__(self):
        require_at_least(self, 2, "group_size")
        require_at_least(self, 1, "max_new_tokens", "page_size")
        for name in ("max_concurrent_rows", "decode_tensor"):
            if getattr(self, name) != "auto":
                require_at_least(self, 1, name)
        if not self.temperature > 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(
                f"need temperature > 0, top_p in (0, 1], top_k >= 0; got {self.temperature}, {self.top_p}, {self.top_k}"
            )


@dataclasses.dataclass(frozen=True)
class RolloutCorrectionSection:
    """Importance weights pi_trainer / pi_rollout on the policy loss (`rollout_correction_weights`)."""

    level: CorrectionLevel = "token"  # token | sequence
    mode: CorrectionMode = "truncate"  # truncate: min(w, threshold); mask: 0 outside [lower, threshold]
    threshold: float = 2.0  # verl's default truncation
    lower: float | None = None  # mask only; None: 1 / threshold

    def __post_init__(self):
        problems = correction_problems(self.level, self.mode, self.threshold, self.lower)
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class AlgoSection:
    """The algorithm (by name, `gift_jax.rl.algorithms`) and the policy-loss settings the update reads.

    `clip_low`, `clip_high` and `agg_mode` left out take the policy loss's own defaults
    (`gift_jax.rl.policy_losses.POLICY_LOSSES`); the loaded config holds the values that run.
    """

    method: str = "grpo"  # grpo | luffy | relift (the registered algorithms)
    policy_loss: str = "ppo_clip"  # ppo_clip | gspo | cispo (the registered policy losses)
    clip_low: float | None = None  # ppo_clip: 0.2; 1 leaves the ratio unbounded below
    clip_high: float | None = None  # > clip_low for "clip-higher" (DAPO: 0.28)
    dual_clip_c: float | None = None  # ppo_clip and gspo only
    agg_mode: AggMode | None = None  # ppo_clip: token-mean
    rollout_correction: RolloutCorrectionSection | None = None  # None: no mismatch correction (the paper)
    mask_truncated: bool = False  # DAPO's overlong filtering: rows cut at max_new_tokens leave the loss
    dynamic_sampling: bool = False  # DAPO: sample more prompts until prompts_per_step groups differ in score
    max_sampling_rounds: int = 10  # dynamic sampling: rounds of prompts_per_step prompts before training anyway
    kl_coef: float = 0.0  # the paper: no KL loss
    kl_kind: KLKind = "k3"
    entropy_coef: float = 0.0
    norm_by_std: bool = False  # the paper: advantage = reward - group mean
    ppo_epochs: int = 1
    mini_batch_prompts: int = 64  # prompts per optimizer update (x group_size rollouts)
    track_kl_to_base: bool = True  # log KL(pi || base) of the rollouts (one extra no-grad forward)
    luffy_gamma: float = LUFFY_GAMMA  # LUFFY policy shaping f(p) = p / (p + gamma)
    relift_batch: int = 16  # ReLIFT: SFT update once this many all-fail questions are buffered
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self):
        if self.method not in ALGORITHMS:
            raise ValueError(f"algo.method={self.method!r} is not one of {sorted(ALGORITHMS)}")
        if self.policy_loss not in POLICY_LOSSES:
            raise ValueError(f"algo.policy_loss={self.policy_loss!r} is not one of {sorted(POLICY_LOSSES)}")
        loss = resolve_policy_loss(
            self.policy_loss,
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            agg_mode=self.agg_mode,
            dual_clip_c=self.dual_clip_c,
        )
        for name in ("clip_low", "clip_high", "agg_mode"):
            object.__setattr__(self, name, getattr(loss, name))
        require_at_least(
            self, 1, "ppo_epochs", "mini_batch_prompts", "relift_batch", "chunk_size", "max_sampling_rounds"
        )
        problems = [
            f"{name} must be >= 0, got {getattr(self, name)}"
            for name in ("clip_low", "clip_high", "kl_coef", "entropy_coef")
            if not getattr(self, name) >= 0
        ]
        if not self.clip_low <= 1:  # the ratio stays above 1 - clip_low; 1: no lower bound
            problems.append(f"clip_low must be <= 1, got {self.clip_low}")
        if loss.max_clip_high is not None and not self.clip_high < loss.max_clip_high:
            problems.append(
                f"clip_high must be < {loss.max_clip_high:g}, got {self.clip_high} (policy loss {self.policy_loss})"
            )
        if self.dual_clip_c is not None and self.dual_clip_c <= 1:
            problems.append(f"dual_clip_c must be > 1, got {self.dual_clip_c}")
        if self.luffy_gamma <= 0:
            problems.append(f"luffy_gamma must be > 0, got {self.luffy_gamma}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class RewardSection:
    RESUMABLE: ClassVar[tuple[str, ...]] = ("timeout_s", "num_workers")  # may change on resume

    kind: Literal["math", "multiple_choice"] = "math"
    timeout_s: float = 5.0  # per answer (math checking runs in worker processes)
    num_workers: int | None = None  # None: one per CPU core
    # DAPO's soft overlong punishment (`gift_jax.rl.overlong_penalty`) added to the reward: 0 up to
    # rollout.max_new_tokens - overlong_buffer tokens, linear to -1 at max_new_tokens. None: off.
    overlong_buffer: int | None = None

    def __post_init__(self):
        require_at_least(self, 1, "num_workers", "overlong_buffer")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclasses.dataclass(frozen=True)
class RLTrainSection(RunSection):
    """A loop step is one RL step: rollouts of `prompts_per_step` prompts, then their updates.
    `eval_every` None: validate only at the end."""

    RESUMABLE: ClassVar[tuple[str, ...]] = RunSection.RESUMABLE + (
        "eval_max_new_tokens",
        "dump_rollouts_every",
        "dump_rollouts_rows",
    )

    log_every: int = 1
    eval_every: int | None = 10
    checkpoint_every: int | None = 10  # None: only at the end
    prompts_per_step: int = 128
    epochs: int = 1
    micro_batch_per_device: int = 2
    eval_k: int = 4
    eval_temperature: float = 0.6
    eval_max_new_tokens: int | None = None  # default: rollout.max_new_tokens
    # WORKDIR/rollouts/step_<N>.jsonl every this many steps, val_step_<N>.jsonl each validation (None: none;
    # gift_jax.rl.rollout_dump), each at most dump_rollouts_rows rollouts (training) or problems (validation).
    dump_rollouts_every: int | None = None
    dump_rollouts_rows: int = 64

    def __post_init__(self):
        super().__post_init__()
        require_at_least(
            self,
            1,
            "prompts_per_step",
            "epochs",
            "micro_batch_per_device",
            "eval_k",
            "eval_max_new_tokens",
            "dump_rollouts_every",
            "dump_rollouts_rows",
        )
        if not (math.isfinite(self.eval_temperature) and self.eval_temperature >= 0):
            raise ValueError(f"eval_temperature must be >= 0 (0: greedy), got {self.eval_temperature}")


@dataclasses.dataclass(frozen=True)
class RLStageConfig:
    model: ModelSection
    data: RLDataSection
    rollout: RolloutSection = RolloutSection()
    algo: AlgoSection = AlgoSection()
    reward: RewardSection = RewardSection()
    optim: OptimConfig = OptimConfig(lr=1e-6, b2=0.999, weight_decay=0.01, clip_norm=1.0)
    train: RLTrainSection = RLTrainSection()
    mesh: MeshConfig = MeshConfig()

    def __post_init__(self):
        if self.algo.kl_coef and not self.model.base_path:
            raise ValueError("algo.kl_coef > 0 needs model.base_path (the frozen reference)")
        buffer = self.reward.overlong_buffer
        if buffer is not None and buffer > self.rollout.max_new_tokens:
            raise ValueError(
                f"reward.overlong_buffer={buffer} exceeds rollout.max_new_tokens={self.rollout.max_new_tokens}"
            )


@dataclasses.dataclass(frozen=True)
class RLSizes:
    """Sizes derived from the config and the devices."""

    num_micro: int  # micro-batches per PPO mini-batch
    mini_batches: int  # PPO updates per RL step and PPO epoch
    relift_micro: int  # micro-batches of a ReLIFT SFT update


def validate_rl_config(config: RLStageConfig, *, num_devices: int, check_paths: bool = True) -> RLSizes:
    """Rejects combinations that cannot run here with one message; returns the derived sizes.

    `check_paths=False` skips the data and model folder checks (a compile-only fit check needs neither)."""
    a, r, t = config.algo, config.rollout, config.train
    devices, problems = placement_problems(config, num_devices, check_paths=check_paths)
    per_update = devices * t.micro_batch_per_device
    rows = a.mini_batch_prompts * r.group_size
    if t.prompts_per_step % a.mini_batch_prompts:
        problems.append(
            f"train.prompts_per_step={t.prompts_per_step} is not divisible by "
            f"algo.mini_batch_prompts={a.mini_batch_prompts}"
        )
    if rows % per_update:
        problems.append(
            f"a mini-batch of {a.mini_batch_prompts} prompts x {r.group_size} rollouts = {rows} rows "
            f"is not divisible by batch devices ({devices}) x train.micro_batch_per_device "
            f"({t.micro_batch_per_device})"
        )
    problems += ALGORITHMS[a.method].size_problems(a, batch_devices=devices)
    if problems:
        raise ConfigError("invalid RL-stage config:\n  - " + "\n  - ".join(problems))
    return RLSizes(
        num_micro=rows // per_update,
        mini_batches=t.prompts_per_step // a.mini_batch_prompts,
        relift_micro=_fewest_micro_batches(max(a.relift_batch // (devices), 1), t.micro_batch_per_device),
    )


def _fewest_micro_batches(rows_per_device: int, max_rows_per_micro: int) -> int:
    """The fewest micro-batches that split `rows_per_device` evenly into at most `max_rows_per_micro` each."""
    return next(
        n
        for n in range(1, rows_per_device + 1)
        if rows_per_device % n == 0 and rows_per_device // n <= max_rows_per_micro
    )
