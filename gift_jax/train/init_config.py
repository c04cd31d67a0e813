"""Configuration of the initialization stage (GIFT / SFT-family baselines), validated up front."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from gift_jax.losses import DEFAULT_CHUNK_SIZE, INIT_LOSSES, LOSS_NAMES
from gift_jax.models.config import ATTENTION_BACKENDS
from gift_jax.parallel import MeshConfig
from gift_jax.train.init_step import StepConfig
from gift_jax.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class ModelSection:
    path: str  # local Hugging Face folder of the base model (also the frozen reference)
    dtype: str = "float32"  # compute dtype ("bfloat16" on accelerators)
    param_dtype: str = "float32"  # policy master weights
    base_param_dtype: str | None = None  # storage dtype of the frozen base copy (default: param_dtype)
    remat: bool = False  # gradient checkpointing per decoder layer
    attention: str = "auto"  # auto | xla | blockwise | splash | cudnn (gift_jax.models.attention)


@dataclasses.dataclass(frozen=True)
class DataSection:
    train_file: str  # parquet / jsonl of demonstrations
    val_file: str | None = None  # held-out demonstrations (validation NLL)
    prompt_key: str = "sft_prompt"
    response_key: str = "solution"
    chat_template: str | None = None  # None: the model folder's; or "qwen-2.5-math", "llama-3", "plain"
    max_length: int = 8192
    truncation: str = "right"  # or "error"
    bucket_lengths: tuple[int, ...] = ()  # padded lengths; () = powers of two up to max_length
    num_threads: int = 2  # grain reader threads
    pack: bool = False  # several demonstrations per row (segment ids), rows of max(bucket_lengths) positions


@dataclasses.dataclass(frozen=True)
class LossSection:
    name: str = "gift"
    beta: float = 20.0  # gift: inverse temperature on the expert token
    smooth_lambda: float = 0.0  # gift: uniform smoothing of the base distribution
    alpha: float = 0.01  # sft_entropy: entropy bonus
    gamma: float = 0.1  # asft: KL(pi || pi_base) weight
    clip_eps: float = 0.2  # psft: ratio clip
    psft_minibatches: int = 4  # psft: updates per global batch against the same "old" policy
    chunk_size: int = DEFAULT_CHUNK_SIZE  # sequence positions (x all batch rows) per output-projection chunk

    def hparams(self) -> tuple[tuple[str, float], ...]:
        """The hyperparameters the chosen loss takes (the registry says which)."""
        return tuple((k, float(getattr(self, k))) for k in INIT_LOSSES[self.name].hparam_defaults)


@dataclasses.dataclass(frozen=True)
class TrainSection:
    global_batch: int = 128  # sequences per optimizer update, over all devices
    micro_batch_per_device: int = 2  # gradient-accumulation granularity
    epochs: int = 10
    max_steps: int | None = None  # stop early (the schedule still spans `epochs`)
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None  # steps between validations; None = once per epoch
    checkpoint_every: int | None = None  # steps between checkpoints; None = once per epoch
    max_to_keep: int = 3
    export_hf: bool = True  # write hf_best/ and hf_final/ folders at the end


@dataclasses.dataclass(frozen=True)
class InitStageConfig:
    model: ModelSection
    data: DataSection
    loss: LossSection = LossSection()
    optim: OptimConfig = OptimConfig()
    train: TrainSection = TrainSection()
    mesh: MeshConfig = MeshConfig()


def validate_init_config(config: InitStageConfig, *, num_devices: int, process_count: int = 1,
                         check_paths: bool = True) -> dict[str, int]:
    """Rejects impossible combinations with one clear message; returns derived sizes.

    Derived: `batch_parallelism` (devices the batch is split over), `num_micro` (micro-batches per
    update), `forward_micro` (micro-batches per global batch, for the no-grad forwards over a whole
    batch: validation, PSFT's old log-probs), `local_batch` (rows this process loads per step).
    `check_paths=False` skips the data and model folder checks (a compile-only fit check needs neither).
    """
    t = config.train
    counts = {f"train.{key}": getattr(t, key) for key in ("epochs", "log_every", "max_to_keep", "global_batch",
                                                          "micro_batch_per_device")}
    counts.update({"loss.psft_minibatches": config.loss.psft_minibatches, "loss.chunk_size": config.loss.chunk_size,
                   "data.max_length": config.data.max_length})
    counts.update({f"train.{key}": getattr(t, key) for key in ("eval_every", "checkpoint_every", "max_steps")
                   if getattr(t, key) is not None})
    problems = [f"{key} must be >= 1, got {value}" for key, value in counts.items() if value < 1]
    if problems:  # the divisibility checks below need these
        raise ValueError("invalid init-stage config:\n  - " + "\n  - ".join(problems))
    if config.loss.name not in LOSS_NAMES:
        problems.append(f"loss.name={config.loss.name!r} is not one of {sorted(LOSS_NAMES)}")
    try:
        data, fsdp, _ = config.mesh.resolve(num_devices)
    except ValueError as err:
        problems.append(str(err))
        data = fsdp = 1
    parallel = data * fsdp
    per_update = parallel * t.micro_batch_per_device
    if t.global_batch % per_update:
        problems.append(f"train.global_batch={t.global_batch} is not divisible by batch devices ({parallel}) x "
                        f"train.micro_batch_per_device ({t.micro_batch_per_device}) = {per_update}")
    if t.global_batch % process_count:
        problems.append(f"train.global_batch={t.global_batch} is not divisible by {process_count} processes")
    if config.loss.name == "psft" and t.global_batch % (config.loss.psft_minibatches * per_update):
        problems.append(f"psft: train.global_batch={t.global_batch} is not divisible by loss.psft_minibatches "
                        f"({config.loss.psft_minibatches}) x {per_update}")
    if config.model.attention not in ATTENTION_BACKENDS:
        problems.append(f"model.attention={config.model.attention!r} is not one of {list(ATTENTION_BACKENDS)}")
    if config.data.truncation not in ("right", "error"):
        problems.append(f"data.truncation={config.data.truncation!r}: expected 'right' or 'error'")
    if config.data.bucket_lengths and max(config.data.bucket_lengths) < config.data.max_length - 1:
        problems.append(f"data.bucket_lengths {config.data.bucket_lengths} cannot hold data.max_length "
                        f"{config.data.max_length}")
    for name in ("train_file", "val_file") if check_paths else ():
        path = getattr(config.data, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"data.{name}: {path} does not exist")
    if check_paths and not (Path(config.model.path) / "config.json").is_file():
        problems.append(f"model.path: {config.model.path} has no config.json")
    if problems:
        raise ValueError("invalid init-stage config:\n  - " + "\n  - ".join(problems))
    updates_per_batch = config.loss.psft_minibatches if config.loss.name == "psft" else 1
    return {"batch_parallelism": parallel, "num_micro": t.global_batch // per_update // updates_per_batch,
            "forward_micro": t.global_batch // per_update, "local_batch": t.global_batch // process_count}


def init_step_config(config: InitStageConfig, sizes: dict[str, int]) -> StepConfig:
    """The static settings of the jitted step, from the config and `validate_init_config`'s sizes."""
    return StepConfig(config.loss.name, config.loss.hparams(), sizes["num_micro"], config.loss.chunk_size)
