"""The RL stage's rollout settings, derived from its config in one place: the trainer, its
validation and the compile-only fit check all read them here, so the fit check compiles the decode
program the run will run (the same token rule, top-k / top-p included, and the same slots)."""

from __future__ import annotations

from gift_jax.evaluation.evaluate import EvalConfig
from gift_jax.rl.algorithms import ALGORITHMS
from gift_jax.rl.config import RLStageConfig
from gift_jax.rollout import SamplingConfig


def needs_base(config: RLStageConfig) -> bool:
    """Whether the frozen base model is loaded (and held during rollouts): a KL term or KL tracking."""
    a = config.algo
    return bool(config.model.base_path) and bool(a.kl_coef or a.track_kl_to_base)


def rollout_sampling(config: RLStageConfig, *, stop_ids: tuple[int, ...] = (0,), pad_id: int = 0) -> SamplingConfig:
    """The sampling of one RL step's rollouts (the tokenizer gives `stop_ids` / `pad_id`; the fit
    check, which has no tokenizer, keeps the defaults: ids change no compiled shape)."""
    r = config.rollout
    return SamplingConfig(
        max_new_tokens=r.max_new_tokens,
        num_samples=ALGORITHMS[config.algo.method].samples_per_prompt(r.group_size),
        temperature=r.temperature,
        top_k=r.top_k,
        top_p=r.top_p,
        stop_ids=stop_ids,
        pad_id=pad_id,
        max_concurrent_rows=r.max_concurrent_rows,
        page_size=r.page_size,
        decode_tensor=r.decode_tensor,
        shrink_tail=r.shrink_tail,
    )


def validation_config(config: RLStageConfig) -> EvalConfig:
    """How the RL stage's periodic validation samples (`train.eval_*`, the rollouts' slots)."""
    t, r = config.train, config.rollout
    return EvalConfig(
        num_samples=t.eval_k,
        temperature=t.eval_temperature,
        seed=t.seed,
        max_new_tokens=t.eval_max_new_tokens or r.max_new_tokens,
        max_concurrent_rows=r.max_concurrent_rows,
    )
