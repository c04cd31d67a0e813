"""The jitted initialization-stage step (GIFT or an SFT-family baseline) and the validation step.

Pure functions of `(TrainState, base params, batch)`; the model is rebuilt from its graphdef inside
(`nnx.merge`), so nothing Python-side is traced per call. A global batch `[B, L]` is split into
`num_micro` micro-batches, scanned with summed gradients; losses return (sum, token count), so the
update uses exactly the token mean of the global batch however it is split over micro-batches and
devices.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from gift_jax.losses import compute_init_loss, loss_needs_old_logprobs, loss_needs_reference
from gift_jax.losses import DEFAULT_CHUNK_SIZE, chunked_token_logprobs
from gift_jax.parallel.activations import activation_sharding, constrain_batch, constrain_like_params
from gift_jax.train.optim import skipped_updates


class TrainState(NamedTuple):
    """Everything that changes during training (donated to the step)."""

    params: Any  # nnx.State of the policy's nnx.Param variables
    opt_state: Any
    step: jax.Array  # [] int32, number of updates applied or skipped


def optimizer_state_shardings(params, tx: optax.GradientTransformation, mesh):
    """Shardings of `tx.init(params)`: Adam's mu / nu laid out like the parameters they mirror,
    counters replicated. `params` may be concrete arrays or `jax.ShapeDtypeStruct`s with shardings."""
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(
        tx, lambda _, sharding: sharding, jax.eval_shape(tx.init, params), param_shardings,
        transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def init_train_state(params, tx: optax.GradientTransformation, mesh) -> TrainState:
    """Step 0, with the optimizer state sharded by `optimizer_state_shardings` (without explicit
    out_shardings jit would replicate mu / nu)."""
    opt_state = jax.jit(tx.init, out_shardings=optimizer_state_shardings(params, tx, mesh))(params)
    return TrainState(params, opt_state, jax.device_put(jnp.zeros((), jnp.int32), NamedSharding(mesh, PartitionSpec())))


def abstract_train_state(params, tx: optax.GradientTransformation, mesh) -> TrainState:
    """`init_train_state` as `jax.ShapeDtypeStruct`s with shardings, from abstract `params` (nothing
    allocated): the input of an ahead-of-time compile of the step."""
    shardings = optimizer_state_shardings(params, tx, mesh)
    opt_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                             jax.eval_shape(tx.init, params), shardings)
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec()))
    return TrainState(params, opt_state, step)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static (hashable) settings of the step."""

    loss_name: str
    loss_hparams: tuple[tuple[str, float], ...] = ()
    num_micro: int = 1  # gradient-accumulation micro-batches per global batch
    chunk_size: int = DEFAULT_CHUNK_SIZE  # positions per output-projection chunk (never [tokens, V] logits)

    @property
    def needs_reference(self) -> bool:
        return loss_needs_reference(self.loss_name)

    @property
    def needs_old_logprobs(self) -> bool:
        return loss_needs_old_logprobs(self.loss_name)


def split_micro_batches(batch: dict[str, jax.Array], num_micro: int) -> dict[str, jax.Array]:
    """`[B, ...]` -> `[num_micro, B // num_micro, ...]`, micro-batch `a` taking rows `a, a + A, ...`.

    Strided rather than contiguous: with the batch split over devices in contiguous blocks, every
    device then holds an equal share of every micro-batch, so no rows move between devices.
    """
    def one(x):
        b = x.shape[0]
        return x.reshape(b // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(one, batch)


def split_minibatches(batch: dict, n: int) -> list[dict]:
    """A batch -> `n` strided mini-batches (each keeps an equal share of rows on every device)."""
    return [jax.tree.map(lambda x: x[i::n], batch) for i in range(n)]


def _hidden(model, batch):
    # Packed batches carry `segment_ids` (several demonstrations per row); padded ones do not.
    return model.hidden_states(batch["input_ids"], batch["positions"], batch["attention_mask"],
                               batch.get("segment_ids"))


def _micro_loss(params, base_params, graphdef, base_graphdef, batch, config: StepConfig):
    """(loss_sum, LossOutput) of one micro-batch; gradients flow into `params` only."""
    model = nnx.merge(graphdef, params)
    ref_hidden = ref_w_out = None
    if config.needs_reference:
        base = nnx.merge(base_graphdef, base_params)
        ref_hidden = jax.lax.stop_gradient(_hidden(base, batch))
        ref_w_out = jax.lax.stop_gradient(base.output_projection())
    out = compute_init_loss(
        config.loss_name, _hidden(model, batch), model.output_projection(), batch["target_ids"],
        batch["loss_mask"], ref_hidden=ref_hidden, ref_w_out=ref_w_out,
        old_logprobs=batch.get("old_logprobs"), chunk_size=config.chunk_size, **dict(config.loss_hparams))
    return out.loss_sum, out


def zero_gradients(params):
    """The float32 gradient accumulator, sharded like the parameters (never whole on one chip)."""
    return constrain_like_params(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))


def accumulate_gradients(total, grads):
    """`total + grads` in float32, both kept in the parameters' shardings: each micro-batch's
    gradient is reduce-scattered into the accumulator rather than all-reduced."""
    return constrain_like_params(jax.tree.map(lambda a, b: a + b.astype(jnp.float32), total,
                                              constrain_like_params(grads)))


def train_step(state: TrainState, base_params, batch, *, graphdef, base_graphdef, tx: optax.GradientTransformation,
               config: StepConfig):
    """One optimizer update on a global batch -> (new state, metrics dict of scalars)."""
    micro = split_micro_batches(batch, config.num_micro)
    grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)

    def accumulate(grads, mb):
        (_, out), g = grad_fn(state.params, base_params, graphdef, base_graphdef, constrain_batch(mb), config)
        return accumulate_gradients(grads, g), {"loss": out.loss_sum, "tokens": out.token_count, **out.metrics}

    grads, per_micro = jax.lax.scan(accumulate, zero_gradients(state.params), micro)
    sums = jax.tree.map(jnp.sum, per_micro)  # every statistic is a sum, so micro-batches add

    count = jnp.maximum(sums["tokens"], 1.0)
    grads = jax.tree.map(lambda g, p: (g / count).astype(p.dtype), grads, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {name: value / count for name, value in sums.items() if name != "tokens"}
    metrics.update(tokens=sums["tokens"], grad_norm=optax.global_norm(grads),
                   skipped_updates=skipped_updates(opt_state).astype(jnp.float32))
    return TrainState(params, opt_state, state.step + 1), metrics


def jit_train_step(state_shardings, mesh, *, graphdef, base_graphdef, tx: optax.GradientTransformation,
                   config: StepConfig):
    """`train_step` jitted as the trainer runs it: state in and out in `state_shardings` (donated),
    metrics replicated. `(state, base_params, batch)` -> `(state, metrics)`."""
    def step(state, base_params, batch):
        with activation_sharding(mesh):  # activations split over the batch axes (FSDP)
            return train_step(state, base_params, batch, graphdef=graphdef, base_graphdef=base_graphdef, tx=tx,
                              config=config)

    return jax.jit(
        step, in_shardings=(state_shardings, None, None),
        out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())), donate_argnums=(0,))


def map_micro_batches(fn, batch: dict[str, jax.Array], num_micro: int):
    """`fn` (rows in, per-row pytree `[b, ...]` out) applied one micro-batch at a time, rows back in order.

    For the no-grad forwards (validation, old / reference log-probs): a `lax.map` over the strided
    micro-batches of `split_micro_batches`, so peak activation memory is one micro-batch's, as in the
    train step, however large the batch.
    """
    if num_micro == 1:
        return fn(batch)
    per_micro = jax.lax.map(fn, split_micro_batches(batch, num_micro))
    return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(-1, *y.shape[2:]), per_micro)


def policy_logprobs(params, batch, *, graphdef, chunk_size: int = DEFAULT_CHUNK_SIZE, num_micro: int = 1):
    """`[B, L]` log-probabilities of the labels under `params`, `num_micro` micro-batches at a time.

    PSFT's "old" policy; also validation's held-out NLL (`eval_step`).
    """
    def one(mb):
        model = nnx.merge(graphdef, params)
        logprobs, _ = chunked_token_logprobs(_hidden(model, mb), model.output_projection(), mb["target_ids"],
                                             chunk_size=chunk_size)
        return logprobs

    return map_micro_batches(one, batch, num_micro)


def eval_step(params, batch, *, graphdef, chunk_size: int = DEFAULT_CHUNK_SIZE, num_micro: int = 1):
    """Validation sums of one batch: plain cross-entropy on the labels (held-out NLL), as the paper.

    Returns {"nll": sum over supervised tokens, "tokens": their count} so batches and processes add.
    """
    logprobs = policy_logprobs(params, batch, graphdef=graphdef, chunk_size=chunk_size, num_micro=num_micro)
    mask = batch["loss_mask"].astype(jnp.float32)
    return {"nll": -jnp.sum(logprobs * mask), "tokens": jnp.sum(mask)}
