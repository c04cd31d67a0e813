"""Configuration of the on-policy RL stage (GRPO, and the unified baselines LUFFY / ReLIFT)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from gift_jax.losses import DEFAULT_CHUNK_SIZE
from gift_jax.parallel import MeshConfig
from gift_jax.rl.grpo import AGG_MODES, KL_KINDS
from gift_jax.train.optim import OptimConfig

METHODS = ("grpo", "luffy", "relift")


@dataclasses.dataclass(frozen=True)
class RLModelSection:
    path: str  # the init checkpoint as a HF folder (or the base itself for "RL only")
    base_path: str | None = None  # the frozen base: KL penalty and KL-to-base tracking
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    attention: str = "auto"  # the update's forward: auto | xla | blockwise | splash | cudnn
    chat_template: str | None = None  # None: the folder's own


@dataclasses.dataclass(frozen=True)
class RLDataSection:
    train_file: str  # RL prompts with reference answers (parquet / jsonl)
    val_file: str | None = None  # validation problems (avg@k during RL): this file's layout or a benchmark's
    prompt_key: str = "prompt"
    answer_key: str = "answer"
    expert_key: str = "solution"  # LUFFY / ReLIFT: the expert demonstration column of train_file
    val_limit: int | None = None  # evaluate on the first N validation problems
    val_instruction: str | None = None  # appended to validation prompts (None: as written, like train_file)


@dataclasses.dataclass(frozen=True)
class RolloutSection:
    group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 8192
    max_concurrent_rows: int | None = None  # engine decode slots; None: sized from the budget (slots_for_budget)


@dataclasses.dataclass(frozen=True)
class AlgoSection:
    method: str = "grpo"  # grpo | luffy | relift
    clip_low: float = 0.2
    clip_high: float = 0.2  # > clip_low for "clip-higher"
    dual_clip_c: float | None = None
    agg_mode: str = "token-mean"
    kl_coef: float = 0.0  # the paper: no KL loss
    kl_kind: str = "k3"
    entropy_coef: float = 0.0
    norm_by_std: bool = False  # the paper: advantage = reward - group mean
    ppo_epochs: int = 1
    mini_batch_prompts: int = 64  # prompts per optimizer update (x group_size rollouts)
    track_kl_to_base: bool = True  # log KL(pi || base) of the rollouts (one extra no-grad forward)
    luffy_gamma: float = 0.1  # LUFFY policy shaping f(p) = p / (p + gamma)
    relift_batch: int = 16  # ReLIFT: SFT update once this many all-fail questions are buffered
    chunk_size: int = DEFAULT_CHUNK_SIZE


@dataclasses.dataclass(frozen=True)
class RewardSection:
    kind: str = "math"  # math | multiple_choice
    timeout_s: float = 5.0
    num_workers: int | None = None


@dataclasses.dataclass(frozen=True)
class RLTrainSection:
    prompts_per_step: int = 128
    epochs: int = 1
    max_steps: int | None = None
    micro_batch_per_device: int = 2
    seed: int = 0
    log_every: int = 1
    eval_every: int | None = 10  # RL steps between validations (None: only at the end)
    eval_k: int = 4
    eval_temperature: float = 0.6
    eval_max_new_tokens: int | None = None  # default: rollout.max_new_tokens
    checkpoint_every: int = 10
    max_to_keep: int = 3
    export_hf: bool = True


@dataclasses.dataclass(frozen=True)
class RLStageConfig:
    model: RLModelSection
    data: RLDataSection
    rollout: RolloutSection = RolloutSection()
    algo: AlgoSection = AlgoSection()
    reward: RewardSection = RewardSection()
    optim: OptimConfig = OptimConfig(lr=1e-6, b2=0.999, weight_decay=0.01, clip_norm=1.0)
    train: RLTrainSection = RLTrainSection()
    mesh: MeshConfig = MeshConfig()


def validate_rl_config(config: RLStageConfig, *, num_devices: int, check_paths: bool = True) -> dict[str, int]:
    """Rejects impossible settings with one message; returns derived sizes.

    `num_micro`: micro-batches per PPO mini-batch; `mini_batches`: PPO updates per step and epoch;
    `relift_micro`: micro-batches of a ReLIFT SFT update. `check_paths=False` skips the file and
    folder checks (a compile-only fit check needs none).
    """
    a, r, t = config.algo, config.rollout, config.train
    counts = {"algo.ppo_epochs": a.ppo_epochs, "algo.mini_batch_prompts": a.mini_batch_prompts,
              "algo.relift_batch": a.relift_batch, "train.prompts_per_step": t.prompts_per_step,
              "train.micro_batch_per_device": t.micro_batch_per_device, "train.checkpoint_every": t.checkpoint_every,
              "train.epochs": t.epochs, "train.log_every": t.log_every, "rollout.max_new_tokens": r.max_new_tokens,
              "train.eval_k": t.eval_k}
    problems = [f"{key} must be >= 1, got {value}" for key, value in counts.items() if value < 1]
    if problems:  # the divisibility checks below need these
        raise ValueError("invalid RL-stage config:\n  - " + "\n  - ".join(problems))
    if a.method not in METHODS:
        problems.append(f"algo.method={a.method!r} is not one of {list(METHODS)}")
    if a.agg_mode not in AGG_MODES:
        problems.append(f"algo.agg_mode={a.agg_mode!r} is not one of {list(AGG_MODES)}")
    if a.kl_kind not in KL_KINDS:
        problems.append(f"algo.kl_kind={a.kl_kind!r} is not one of {list(KL_KINDS)}")
    if a.kl_coef and not config.model.base_path:
        problems.append("algo.kl_coef > 0 needs model.base_path (the frozen reference)")
    if r.group_size < 2:
        problems.append(f"rollout.group_size must be >= 2, got {r.group_size}")
    if config.reward.kind not in ("math", "multiple_choice"):
        problems.append(f"reward.kind={config.reward.kind!r}: expected 'math' or 'multiple_choice'")
    try:
        data, fsdp, _ = config.mesh.resolve(num_devices)
    except ValueError as err:
        problems.append(str(err))
        data = fsdp = 1
    per_update = data * fsdp * t.micro_batch_per_device
    rows = a.mini_batch_prompts * r.group_size
    if t.prompts_per_step % a.mini_batch_prompts:
        problems.append(f"train.prompts_per_step={t.prompts_per_step} is not divisible by "
                        f"algo.mini_batch_prompts={a.mini_batch_prompts}")
    if rows % per_update:
        problems.append(f"a mini-batch of {a.mini_batch_prompts} prompts x {r.group_size} rollouts = {rows} rows "
                        f"is not divisible by batch devices ({data * fsdp}) x train.micro_batch_per_device "
                        f"({t.micro_batch_per_device})")
    if a.method == "relift" and a.relift_batch % (data * fsdp):
        problems.append(f"algo.relift_batch={a.relift_batch} is not divisible by batch devices ({data * fsdp})")
    for name in ("train_file", "val_file") if check_paths else ():
        path = getattr(config.data, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"data.{name}: {path} does not exist")
    for name in ("path", "base_path") if check_paths else ():
        path = getattr(config.model, name)
        if path is not None and not (Path(path) / "config.json").is_file():
            problems.append(f"model.{name}: {path} has no config.json")
    if problems:
        raise ValueError("invalid RL-stage config:\n  - " + "\n  - ".join(problems))
    return {"num_micro": rows // per_update, "mini_batches": t.prompts_per_step // a.mini_batch_prompts,
            "relift_micro": _fewest_micro_batches(max(a.relift_batch // (data * fsdp), 1), t.micro_batch_per_device)}


def _fewest_micro_batches(rows_per_device: int, max_rows_per_micro: int) -> int:
    """The fewest micro-batches that split `rows_per_device` evenly into at most `max_rows_per_micro` each."""
    return next(n for n in range(1, rows_per_device + 1)
                if rows_per_device % n == 0 and rows_per_device // n <= max_rows_per_micro)
