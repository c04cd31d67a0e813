"""One optimizer update from summed micro-batch gradients: the body both stages' jitted steps share.

The f32 gradient accumulator is constrained to the parameters' shardings (as MaxText's
`gradient_accumulation.py` does): without the constraint GSPMD may keep the scan carry replicated,
so under FSDP every device would hold a full-size f32 copy of the gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gift_jax.parallel.activations import constrain_batch
from gift_jax.runtime.optim import consecutive_skipped_updates, skipped_updates
from gift_jax.runtime.train_state import TrainState

# Update metrics that count (running totals), as opposed to per-update values a loop may average.
OPTIMIZER_COUNTERS = ("skipped_updates", "consecutive_skipped")

# (params, micro_batch) -> (scalar loss, dict of scalar statistics); differentiated in params.
MicroLoss = Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


def _constrain(tree, shardings):
    return tree if shardings is None else jax.lax.with_sharding_constraint(tree, shardings)


def accumulate_and_apply(
    state: TrainState,
    micro_loss: MicroLoss,
    micro_batches: dict[str, jax.Array],
    tx: optax.GradientTransformation,
    *,
    param_shardings: Any = None,
    grad_divisor: Callable[[dict[str, jax.Array]], jax.Array] | None = None,
) -> tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]:
    """Scans `micro_loss` over `micro_batches`, sums f32 gradients, applies one `tx` update.

    Args:
      micro_batches: the batch with a leading `[num_micro]` axis (`split_micro_batches`).
      param_shardings: the parameters' shardings (a pytree like `state.params`); the accumulator is
        pinned to them. None leaves placement to the compiler (single device tests).
      grad_divisor: per-micro statistics `[num_micro]` -> the scalar the summed gradient is divided
        by (the init stage's supervised-token count, its losses being sums). None: the micro losses
        are already normalised by the whole batch (the RL stage's global denominator).
    Returns:
      `(new state, per-micro statistics [num_micro] (loss included),
      {"grad_norm", "skipped_updates", "consecutive_skipped"})`.
    """
    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def accumulate(grads, mb):
        # Each micro-batch split over the batch axes (a no-op outside `activation_sharding`).
        (loss, stats), g = grad_fn(state.params, constrain_batch(mb))
        grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g)
        return _constrain(grads, param_shardings), {"loss": loss, **stats}

    zeros = _constrain(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params), param_shardings)
    grads, per_micro = jax.lax.scan(accumulate, zeros, micro_batches)
    divisor = 1.0 if grad_divisor is None else grad_divisor(per_micro)
    grads = jax.tree.map(lambda g, p: (g / divisor).astype(p.dtype), grads, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    update_metrics = {
        "grad_norm": optax.global_norm(grads),
        "skipped_updates": skipped_updates(opt_state).astype(jnp.float32),
        "consecutive_skipped": consecutive_skipped_updates(opt_state).astype(jnp.float32),
    }
    return TrainState(params, opt_state, state.step + 1), per_micro, update_metrics
