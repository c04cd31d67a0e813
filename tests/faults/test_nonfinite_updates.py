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


def _always_poisoned(monkeypatch):
    """The init stage's optimizer with every gradient NaN (e.g. a data or model problem the checks missed)."""
    from gift_jax.train import init_trainer

    make = init_trainer.make_optimizer
    poisoned = {step: jnp.nan for step in range(100)}
    monkeypatch.setattr(init_trainer, "make_optimizer", lambda *a: optax.chain(poison_gradients(poisoned), make(*a)))


@pytest.mark.slow  # init runs
def test_a_run_whose_updates_keep_failing_stops_naming_the_steps(tiny_run_inputs, tmp_path, monkeypatch):
    from gift_jax.config_io import load_config
    from gift_jax.runtime.run import TrainingDiverged
    from gift_jax.train.init_config import InitStageConfig
    from gift_jax.train.init_trainer import run_init_stage
    from tests.helpers import init_overrides

    _always_poisoned(monkeypatch)
    extra = {"train.max_consecutive_skipped": 3, "train.epochs": 3, "train.export_hf": True}
    config = load_config(InitStageConfig, None, init_overrides(tiny_run_inputs, **extra))
    with pytest.raises(TrainingDiverged, match=r"the last 3 updates \(loop steps 1\.\.3\) had non-finite gradients"):
        run_init_stage(config, tmp_path / "run")
    assert not (tmp_path / "run" / "hf_final").exists()

    # Fewer updates than the limit, every one skipped: the run ends, but exports nothing as if it had trained.
    short = {**extra, "train.epochs": 1, "train.max_consecutive_skipped": 5}  # 3 steps
    config = load_config(InitStageConfig, None, init_overrides(tiny_run_inputs, **short))
    with pytest.raises(TrainingDiverged, match="no update was applied"):
        run_init_stage(config, tmp_path / "short")
    assert not (tmp_path / "short" / "hf_final").exists()
