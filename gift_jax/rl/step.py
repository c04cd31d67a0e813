"""The jitted GRPO update and the no-grad log-prob pass over rollouts.

A rollout row is `prompt (left-padded to P) + completion (right-padded to N)`. The model reads
`input_ids = row[:-1]` (`[B, P + N - 1]`), and positions `P - 1 ...` predict the N completion tokens,
so only `[B, N, d]` hidden states reach the chunked output projection: RL never holds
`[tokens, V]` logits.

Batch keys (all leading dim B): input_ids, positions, attention_mask `[B, P+N-1]`; targets,
completion_mask, old_logprobs `[B, N]`; advantages `[B]`; optional is_expert `[B]` (LUFFY) and
ref_logprobs `[B, N]` (KL penalty).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from gift_jax.losses import DEFAULT_CHUNK_SIZE, chunked_token_logprobs
from gift_jax.rl.grpo import aggregate_loss, grpo_loss_terms, loss_denominator
from gift_jax.parallel.activations import activation_sharding, constrain_batch
from gift_jax.train.init_step import (
    TrainState, accumulate_gradients, map_micro_batches, split_micro_batches, zero_gradients,
)
from gift_jax.train.optim import skipped_updates


@dataclasses.dataclass(frozen=True)
class RLStepConfig:
    """Static settings of the GRPO update (defaults: the paper's RL stage)."""

    num_micro: int = 1
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip_c: float | None = None
    agg_mode: str = "token-mean"
    seq_normaliser: float | None = None  # seq-mean-token-sum-norm: the generation budget
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    entropy_coef: float = 0.0
    temperature: float = 1.0  # the rollout temperature: log-probs are of logits / temperature
    chunk_size: int = DEFAULT_CHUNK_SIZE
    shaping_gamma: float = 0.1  # LUFFY f(p) = p / (p + gamma) on expert tokens
    use_expert: bool = False  # batch carries is_expert (LUFFY)


def rl_step_config(config, sizes: dict[str, int]) -> RLStepConfig:
    """The update's static settings from an `RLStageConfig` and `validate_rl_config`'s sizes."""
    a, r = config.algo, config.rollout
    return RLStepConfig(
        num_micro=sizes["num_micro"], clip_low=a.clip_low, clip_high=a.clip_high, dual_clip_c=a.dual_clip_c,
        agg_mode=a.agg_mode, seq_normaliser=float(r.max_new_tokens), kl_coef=a.kl_coef, kl_kind=a.kl_kind,
        entropy_coef=a.entropy_coef, temperature=r.temperature, chunk_size=a.chunk_size,
        shaping_gamma=a.luffy_gamma, use_expert=a.method == "luffy")


def completion_logprobs(params, batch, *, graphdef, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE,
                        entropy_gradient: bool = False):
    """(`[B, N]` log-probs of the completion tokens, `[B, N]` entropies) at `temperature`.

    The entropy is differentiable only with `entropy_gradient` (an entropy bonus needs it)."""
    model = nnx.merge(graphdef, params)
    hidden = model.hidden_states(batch["input_ids"], batch["positions"], batch["attention_mask"])
    n = batch["targets"].shape[1]
    hidden = hidden[:, hidden.shape[1] - n:]
    return chunked_token_logprobs(hidden, model.output_projection(), batch["targets"], chunk_size=chunk_size,
                                  temperature=temperature, entropy_gradient=entropy_gradient)


def rollout_logprobs(params, batch, *, graphdef, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     num_micro: int = 1):
    """No-grad `completion_logprobs` of a whole step's rollouts, `num_micro` micro-batches at a time.

    The old-policy and reference log-probs cover every rollout of a step (prompts x G rows of up to
    prompt + max_new_tokens tokens); one forward over all of them would need the activations of the
    whole step at once, so it runs micro-batch by micro-batch like the update.
    """
    return map_micro_batches(
        lambda mb: completion_logprobs(params, mb, graphdef=graphdef, temperature=temperature, chunk_size=chunk_size),
        batch, num_micro)


def _micro_loss(params, batch, denominator, graphdef, config: RLStepConfig):
    logprobs, entropy = completion_logprobs(params, batch, graphdef=graphdef, temperature=config.temperature,
                                            chunk_size=config.chunk_size, entropy_gradient=config.entropy_coef != 0)
    mask = batch["completion_mask"]
    per_token, stats = grpo_loss_terms(
        logprobs, batch["old_logprobs"], batch["advantages"], mask, clip_low=config.clip_low,
        clip_high=config.clip_high, dual_clip_c=config.dual_clip_c,
        is_expert=batch["is_expert"] if config.use_expert else None, shaping_gamma=config.shaping_gamma,
        ref_logprobs=batch.get("ref_logprobs"), kl_coef=config.kl_coef, kl_kind=config.kl_kind,
        entropy=entropy, entropy_coef=config.entropy_coef)
    loss = aggregate_loss(per_token, mask, config.agg_mode, seq_normaliser=config.seq_normaliser,
                          global_denominator=denominator)
    m = mask.astype(jnp.float32)
    stats["entropy"] = jnp.sum(jax.lax.stop_gradient(entropy) * m) / jnp.maximum(jnp.sum(m), 1.0)
    return loss, stats


def rl_train_step(state: TrainState, batch, *, graphdef, tx: optax.GradientTransformation, config: RLStepConfig):
    """One optimizer update on a mini-batch of rollouts -> (new state, metrics).

    The loss's denominator is computed once over the whole mini-batch and shared by its
    micro-batches, so accumulation gives exactly the mini-batch loss. Diagnostics are the mean of the
    micro-batches' token means.
    """
    denominator = loss_denominator(batch["completion_mask"], config.agg_mode, seq_normaliser=config.seq_normaliser)
    micro = split_micro_batches(batch, config.num_micro)
    grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

    def accumulate(grads, mb):
        (loss, stats), g = grad_fn(state.params, constrain_batch(mb), denominator, graphdef, config)
        return accumulate_gradients(grads, g), {"loss": loss, **stats}

    grads, per_micro = jax.lax.scan(accumulate, zero_gradients(state.params), micro)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: jnp.max(v) if k.endswith("_max") else jnp.mean(v) for k, v in per_micro.items()}
    metrics.update(loss=jnp.sum(per_micro["loss"]), grad_norm=optax.global_norm(grads),
                   skipped_updates=skipped_updates(opt_state).astype(jnp.float32))
    return TrainState(params, opt_state, state.step + 1), metrics


def jit_rl_train_step(state_shardings, mesh, *, graphdef, tx: optax.GradientTransformation, config: RLStepConfig):
    """`rl_train_step` jitted as the trainer runs it: state donated and kept in `state_shardings`,
    metrics replicated. `(state, batch)` -> `(state, metrics)`."""
    def step(state, batch):
        with activation_sharding(mesh):  # activations split over the batch axes (FSDP)
            return rl_train_step(state, batch, graphdef=graphdef, tx=tx, config=config)

    return jax.jit(step, in_shardings=(state_shardings, None),
                   out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())), donate_argnums=(0,))
