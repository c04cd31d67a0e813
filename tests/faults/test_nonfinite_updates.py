"""Injected NaN / inf gradients: those updates are skipped and counted, training goes on."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gift_jax.models import ModelConfig, Transformer
from gift_jax.runtime import TrainState
from gift_jax.runtime.demonstrations import DemonstrationStepConfig, demonstration_step
from gift_jax.runtime.optim import OptimConfig, make_optimizer

CONFIG = ModelConfig(
    family="llama",
    vocab_size=32,
    hidden_size=16,
    intermediate_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=8,
)
POISONED = {2: jnp.nan, 4: jnp.inf}  # optimizer step -> value injected into every gradient


def poison_gradients(at_steps: dict[int, float]) -> optax.GradientTransformation:
    """Test-only transform: replaces the whole gradient by NaN / inf on the given update counts."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(grads, count, params=None):
        value = jnp.float32(0.0)
        for step, poison in at_steps.items():
            value = jnp.where(count == step, poison, value)
        return jax.tree.map(lambda g: g + value, grads), count + 1

    return optax.GradientTransformation(init, update)


def _batch(seed):
    ids = np.random.RandomState(seed).randint(0, 32, (4, 8)).astype(np.int32)
    return {
        "input_ids": ids,
        "target_ids": np.roll(ids, -1, 1),
        "loss_mask": np.ones((4, 8), np.float32),
        "attention_mask": np.ones((4, 8), np.int32),
        "positions": np.tile(np.arange(8, dtype=np.int32), (4, 1)),
    }


@pytest.mark.slow  # a training run
def test_poisoned_updates_are_skipped_counted_and_training_continues():
    graphdef, params = nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(0)), nnx.Param)
    tx = optax.chain(poison_gradients(POISONED), make_optimizer(OptimConfig(lr=1e-2), total_steps=10))
    step = jax.jit(
        functools.partial(
            demonstration_step,
            graphdef=graphdef,
            base_graphdef=graphdef,
            tx=tx,
            config=DemonstrationStepConfig("sft", chunk_size=8),
        )
    )
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    batch = _batch(0)
    losses, skipped = [], []
    for i in range(8):
        before = jax.tree.leaves(state.params)
        state, metrics = step(state, None, batch)
        changed = any(not np.array_equal(a, b) for a, b in zip(before, jax.tree.leaves(state.params)))
        assert changed == (i not in POISONED), i
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
        losses.append(float(metrics["loss"]))
        skipped.append(int(metrics["skipped_updates"]))
    assert skipped == [0, 0, 1, 1, 2, 2, 2, 2]
    assert losses[-1] < losses[0]
