"""The jitted GRPO update and the no-grad log-prob pass over rollouts.

A rollout row is `prompt (left-padded to P) + completion (right-padded to N)`. The model reads
`input_ids = row[:-1]` (`[B, P + N - 1]`), and positions `P - 1 ...` predict the N completion tokens,
so only `[B, N, d]` hidden states reach the chunked output projection: RL never holds
`[tokens, V]` logits.

Batch keys (all leading dim B): input_ids, positions, attention_mask `[B, P+N-1]`; targets,
completion_mask, old_logprobs `[B, N]`; advantages `[B]`; optional is_expert `[B]` (LUFFY),
ref_logprobs `[B, N]` (KL penalty) and is_weights `[B, N]` (`algo.rollout_correction`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gift_jax.losses import DEFAULT_CHUNK_SIZE, chunked_token_logprobs
from gift_jax.rl.config import AlgoSection
from gift_jax.rl.grpo import aggregate_loss, grpo_loss_terms, loss_denominator
from gift_jax.runtime.accumulate import accumulate_and_apply
from gift_jax.runtime.batching import map_micro_batches, split_micro_batches
from gift_jax.runtime.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class RLStepConfig:
    """Static settings of the GRPO update: the config's `algo` section as given, plus what the stage derives."""

    algo: AlgoSection = AlgoSection()
    num_micro: int = 1
    seq_normaliser: float | None = None  # seq-mean-token-sum-norm: the generation budget
    temperature: float = 1.0  # the rollout temperature: log-probs are of logits / temperature
    use_expert: bool = False  # batch carries is_expert (LUFFY)


def completion_logprobs(
    params,
    batch,
    *,
    graphdef,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    entropy_gradient: bool = False,
):
    """(`[B, N]` log-probs of the completion tokens, `[B, N]` entropies) at `temperature`.

    The entropy is differentiable only with `entropy_gradient` (an entropy bonus needs it)."""
    model = nnx.merge(graphdef, params)
    hidden = model.hidden_states(batch["input_ids"], batch["positions"], batch["attention_mask"])
    n = batch["targets"].shape[1]
    hidden = hidden[:, hidden.shape[1] - n :]
    return chunked_token_logprobs(
        hidden,
        model.output_projection(),
        batch["targets"],
        chunk_size=chunk_size,
        temperature=temperature,
        entropy_gradient=entropy_gradient,
    )


def rollout_logprobs(
    params, batch, *, graphdef, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE, num_micro: int = 1
):
    """No-grad `completion_logprobs` of a whole step's rollouts, `num_micro` micro-batches at a time.

    The old-policy and reference log-probs cover every rollout of a step (prompts x G rows of up to
    prompt + max_new_tokens tokens); one forward over all of them would need the activations of the
    whole step at once, so it runs micro-batch by micro-batch like the update.
    """
    return map_micro_batches(
        lambda mb: completion_logprobs(params, mb, graphdef=graphdef, temperature=temperature, chunk_size=chunk_size),
        batch,
        num_micro,
    )


def _micro_loss(params, batch, *, denominator, graphdef, config: RLStepConfig):
    a = config.algo
    logprobs, entropy = completion_logprobs(
        params,
        batch,
        graphdef=graphdef,
        temperature=config.temperature,
        chunk_size=a.chunk_size,
        entropy_gradient=a.entropy_coef != 0,
    )
    mask = batch["completion_mask"]
    per_token, stats = grpo_loss_terms(
        logprobs,
        batch["old_logprobs"],
        batch["advantages"],
        mask,
        loss=a.policy_loss,
        clip_low=a.clip_low,
        clip_high=a.clip_high,
        dual_clip_c=a.dual_clip_c,
        is_weights=batch["is_weights"] if a.rollout_correction is not None else None,
        is_expert=batch["is_expert"] if config.use_expert else None,
        shaping_gamma=a.luffy_gamma,
        ref_logprobs=batch.get("ref_logprobs"),
        kl_coef=a.kl_coef,
        kl_kind=a.kl_kind,
        entropy=entropy,
        entropy_coef=a.entropy_coef,
    )
    loss = aggregate_loss(
        per_token, mask, a.agg_mode, seq_normaliser=config.seq_normaliser, global_denominator=denominator
    )
    m = mask.astype(jnp.float32)
    stats["entropy"] = jnp.sum(jax.lax.stop_gradient(entropy) * m) / jnp.maximum(jnp.sum(m), 1.0)
    return loss, stats


def rl_train_step(
    state: TrainState,
    batch,
    *,
    graphdef,
    tx: optax.GradientTransformation,
    config: RLStepConfig,
    param_shardings: Any = None,
):
    """One optimizer update on a mini-batch of rollouts -> (new state, metrics).

    The loss's denominator is computed once over the whole mini-batch and shared by its
    micro-batches, so accumulation gives exactly the mini-batch loss. Diagnostics are the mean of the
    micro-batches' token means.
    """
    denominator = loss_denominator(batch["completion_mask"], config.algo.agg_mode, seq_normaliser=config.seq_normaliser)
    micro_loss = functools.partial(_micro_loss, denominator=denominator, graphdef=graphdef, config=config)
    state, per_micro, update_metrics = accumulate_and_apply(
        state, micro_loss, split_micro_batches(batch, config.num_micro), tx, param_shardings=param_shardings
    )
    metrics = {k: jnp.max(v) if k.endswith("_max") else jnp.mean(v) for k, v in per_micro.items()}
    return state, {**metrics, "loss": jnp.sum(per_micro["loss"]), **update_metrics}
