"""Updates and log-probabilities on demonstration batches (prompt + expert response, labels masked to
the response): the init stage trains on them (any registered init loss), and so does ReLIFT's
interleaved SFT update in the RL stage.

Pure functions of `(TrainState, base params, batch)`; the model is rebuilt from its graphdef inside
(`nnx.merge`), so nothing Python-side is traced per call.

Batch keys (all `[B, L]`): input_ids, positions, attention_mask, target_ids, loss_mask; PSFT adds
old_logprobs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gift_jax.losses import (
    DEFAULT_CHUNK_SIZE,
    chunked_token_logprobs,
    compute_init_loss,
    loss_needs_old_logprobs,
    loss_needs_reference,
)
from gift_jax.runtime.accumulate import accumulate_and_apply
from gift_jax.runtime.batching import map_micro_batches, split_micro_batches
from gift_jax.runtime.train_state import TrainState


@dataclasses.dataclass(frozen=True)
class DemonstrationStepConfig:
    """Static (hashable) settings of an update: a registered init loss, its hyper-parameters, micro-batching."""

    name: str = "sft"
    hparams: tuple[tuple[str, float], ...] = ()
    chunk_size: int = DEFAULT_CHUNK_SIZE  # positions per output-projection chunk (never [tokens, V] logits)
    num_micro: int = 1  # gradient-accumulation micro-batches per batch

    @property
    def needs_reference(self) -> bool:
        return loss_needs_reference(self.name)

    @property
    def needs_old_logprobs(self) -> bool:
        return loss_needs_old_logprobs(self.name)


def _hidden(model, batch):
    # Packed batches carry `segment_ids` (several demonstrations per row); padded ones do not.
    return model.hidden_states(
        batch["input_ids"], batch["positions"], batch["attention_mask"], batch.get("segment_ids")
    )


def demonstration_micro_loss(
    params, batch, *, graphdef, loss: DemonstrationStepConfig, base_graphdef=None, base_params=None
):
    """`(loss_sum, {"tokens": count, **metric sums})` of one micro-batch; gradients reach `params` only.

    Sums, not means: the update divides the summed gradient by the whole batch's token count.
    """
    model = nnx.merge(graphdef, params)
    ref_hidden = ref_w_out = None
    if loss.needs_reference:
        base = nnx.merge(base_graphdef, base_params)
        ref_hidden = jax.lax.stop_gradient(_hidden(base, batch))
        ref_w_out = jax.lax.stop_gradient(base.output_projection())
    out = compute_init_loss(
        loss.name,
        _hidden(model, batch),
        model.output_projection(),
        batch["target_ids"],
        batch["loss_mask"],
        ref_hidden=ref_hidden,
        ref_w_out=ref_w_out,
        old_logprobs=batch.get("old_logprobs"),
        chunk_size=loss.chunk_size,
        **dict(loss.hparams),
    )
    return out.loss_sum, {"tokens": out.token_count, **out.metrics}


def token_mean_metrics(per_micro: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-micro sums `[num_micro]` -> (token count floored at 1, every sum as a token mean, plus `tokens`)."""
    sums = jax.tree.map(jnp.sum, per_micro)
    count = jnp.maximum(sums["tokens"], 1.0)
    return count, {
        **{name: value / count for name, value in sums.items() if name != "tokens"},
        "tokens": sums["tokens"],
    }


def demonstration_step(
    state: TrainState,
    base_params,
    batch,
    *,
    graphdef,
    base_graphdef,
    tx: optax.GradientTransformation,
    config: DemonstrationStepConfig,
    param_shardings: Any = None,
):
    """One optimizer update on a batch of demonstrations -> (new state, metrics: token means of the
    loss and its statistics, `tokens`, `grad_norm`, `skipped_updates`).

    The `num_micro` micro-batches' gradients are summed and divided once by the batch's token count,
    so the update is exactly the token mean of the batch however it is split.
    """
    micro_loss = functools.partial(
        demonstration_micro_loss, graphdef=graphdef, loss=config, base_graphdef=base_graphdef, base_params=base_params
    )
    state, per_micro, update_metrics = accumulate_and_apply(
        state,
        micro_loss,
        split_micro_batches(batch, config.num_micro),
        tx,
        param_shardings=param_shardings,
        grad_divisor=lambda stats: token_mean_metrics(stats)[0],
    )
    _, metrics = token_mean_metrics(per_micro)
    return state, {**metrics, **update_metrics}


def policy_logprobs(params, batch, *, graphdef, chunk_size: int = DEFAULT_CHUNK_SIZE, num_micro: int = 1):
    """`[B, L]` log-probabilities of the labels under `params`, `num_micro` micro-batches at a time.

    PSFT's "old" policy; also validation's held-out NLL (`eval_step`).
    """

    def one(mb):
        model = nnx.merge(graphdef, params)
        logprobs, _ = chunked_token_logprobs(
            _hidden(model, mb), model.output_projection(), mb["target_ids"], chunk_size=chunk_size
        )
        return logprobs

    return map_micro_batches(one, batch, num_micro)


def eval_step(params, batch, *, graphdef, chunk_size: int = DEFAULT_CHUNK_SIZE, num_micro: int = 1):
    """Validation sums of one batch: plain cross-entropy on the labels (held-out NLL), as the paper.

    Returns {"nll": sum over supervised tokens, "tokens": their count} so batches and processes add.
    """
    logprobs = policy_logprobs(params, batch, graphdef=graphdef, chunk_size=chunk_size, num_micro=num_micro)
    mask = batch["loss_mask"].astype(jnp.float32)
    return {"nll": -jnp.sum(logprobs * mask), "tokens": jnp.sum(mask)}
