"""Configuration of the initialization stage (GIFT / SFT-family baselines), validated up front.

Section ranges are checked when the config is loaded; `validate_init_config` adds the checks that
need the device count or the file system and returns the derived sizes.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from gift_jax.config_io import ConfigError
from gift_jax.losses import DEFAULT_CHUNK_SIZE, INIT_LOSSES, LOSS_NAMES
from gift_jax.losses.registry import resolve_init_loss_hparams
from gift_jax.parallel import MeshConfig
from gift_jax.runtime.config import (
    ModelSection,
    RunSection,
    placement_problems,
    require_at_least,
)
from gift_jax.runtime.optim import OptimConfig

_GIFT, _PSFT = INIT_LOSSES["gift"].hparam_defaults, INIT_LOSSES["psft"].hparam_defaults


@dataclasses.dataclass(frozen=True)
class DataSection:
    RESUMABLE: ClassVar[tuple[str, ...]] = ("num_threads",)  # may change on resume (runtime.workdir.check_resume)

    train_file: str  # parquet / jsonl of demonstrations
    val_file: str | None = None  # held-out demonstrations (validation NLL)
    prompt_key: str = "sft_prompt"
    response_key: str = "solution"
    max_length: int = 8192
    truncation: str = "right"  # or "error"
    bucket_lengths: tuple[int, ...] = ()  # padded lengths; () = powers of two up to max_length
    num_threads: int = 2  # grain reader threads (0: read on the main thread)
    pack: bool = False  # several demonstrations per row (segment ids), rows of max(bucket_lengths) positions

    def __post_init__(self):
        require_at_least(self, 1, "max_length")
        require_at_least(self, 0, "num_threads")
        if self.truncation not in ("right", "error"):
            raise ValueError(f"data.truncation={self.truncation!r}: expected 'right' or 'error'")
        buckets = self.bucket_lengths
        if buckets and (min(buckets) < 1 or any(a >= b for a, b in zip(buckets, buckets[1:]))):
            raise ValueError(f"bucket_lengths {list(buckets)} must be positive and strictly increasing")
        if buckets and max(buckets) < self.max_length - 1:
            raise ValueError(f"bucket_lengths {list(buckets)} cannot hold max_length {self.max_length}")


@dataclasses.dataclass(frozen=True)
class LossSection:
    """The loss by name (`gift_jax.losses.INIT_LOSSES`) and its hyper-parameters; defaults and ranges
    are the registry's."""

    name: str = "gift"
    beta: float = _GIFT["beta"]  # gift: inverse temperature on the expert token
    smooth_lambda: float = _GIFT["smooth_lambda"]  # gift: uniform smoothing of the base distribution
    alpha: float = 0.01  # sft_entropy: entropy bonus (the registry has no default)
    gamma: float = 0.1  # asft: KL(pi || pi_base) weight (the registry has no default)
    clip_eps: float = _PSFT["clip_eps"]  # psft: ratio clip
    label_smoothing: float = 0.0  # sft: share of the target spread uniformly over the vocabulary
    psft_minibatches: int = 4  # psft: updates per global batch against the same "old" policy
    chunk_size: int = DEFAULT_CHUNK_SIZE  # sequence positions (x all batch rows) per output-projection chunk

    def __post_init__(self):
        if self.name not in LOSS_NAMES:
            raise ValueError(f"loss.name={self.name!r} is not one of {sorted(LOSS_NAMES)}")
        require_at_least(self, 1, "psft_minibatches", "chunk_size")
        resolve_init_loss_hparams(self.name, dict(self.hparams()))

    def hparams(self) -> tuple[tuple[str, float], ...]:
        """The hyperparameters the chosen loss takes (the registry says which)."""
        return tuple((k, float(getattr(self, k))) for k in INIT_LOSSES[self.name].hparam_defaults)

    @property
    def updates_per_batch(self) -> int:
        """Optimizer updates per global batch: PSFT's mini-batches share one "old" policy, others take one."""
        return self.psft_minibatches if INIT_LOSSES[self.name].needs_old_logprobs else 1


@dataclasses.dataclass(frozen=True)
class TrainSection(RunSection):
    """Batch sizes and length of the stage; a loop step is one optimizer update (`eval_every` /
    `checkpoint_every` None: once per epoch)."""

    global_batch: int = 128  # sequences per global batch, over all devices
    micro_batch_per_device: int = 2  # gradient-accumulation granularity
    epochs: int = 10

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 1, "global_batch", "micro_batch_per_device", "epochs")


@dataclasses.dataclass(frozen=True)
class InitStageConfig:
    model: ModelSection
    data: DataSection
    loss: LossSection = LossSection()
    optim: OptimConfig = OptimConfig()
    train: TrainSection = TrainSection()
    mesh: MeshConfig = MeshConfig()


@dataclasses.dataclass(frozen=True)
class InitSizes:
    """Sizes derived from the config and the devices."""

    batch_parallelism: int  # devices the batch is split over
    num_micro: int  # micro-batches per optimizer update
    forward_micro: int  # micro-batches per global batch, for the no-grad forwards (validation, PSFT's old log-probs)
    local_batch: int  # rows this process loads per global batch


def validate_init_config(
    config: InitStageConfig, *, num_devices: int, process_count: int = 1, check_paths: bool = True
) -> InitSizes:
    """Rejects combinations that cannot run here with one clear message; returns the derived sizes.

    `check_paths=False` skips the data and model folder checks (a compile-only fit check needs neither)."""
    t, loss = config.train, config.loss
    parallel, problems = placement_problems(config, num_devices, check_paths=check_paths)
    per_update = parallel * t.micro_batch_per_device
    if t.global_batch % per_update:
        problems.append(
            f"train.global_batch={t.global_batch} is not divisible by batch devices ({parallel}) x "
            f"train.micro_batch_per_device ({t.micro_batch_per_device}) = {per_update}"
        )
    if t.global_batch % process_count:
        problems.append(f"train.global_batch={t.global_batch} is not divisible by {process_count} processes")
    if loss.updates_per_batch > 1 and t.global_batch % (loss.updates_per_batch * per_update):
        problems.append(
            f"psft: train.global_batch={t.global_batch} is not divisible by loss.psft_minibatches "
            f"({loss.psft_minibatches}) x {per_update}"
        )
    if problems:
        raise ConfigError("invalid init-stage config:\n  - " + "\n  - ".join(problems))
    return InitSizes(
        batch_parallelism=parallel,
        num_micro=t.global_batch // per_update // loss.updates_per_batch,
        forward_micro=t.global_batch // per_update,
        local_batch=t.global_batch // process_count,
    )
