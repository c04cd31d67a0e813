"""The GRPO update: sharded over 8 devices equals one device; micro-batching is exact."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import MeshConfig, make_mesh, shard_batch, state_shardings
from gift_jax.rl.config import AlgoSection, RolloutCorrectionSection
from gift_jax.rl.rollouts import update_batch
from gift_jax.rl.step import RLStepConfig, completion_logprobs, rl_train_step, rollout_logprobs
from gift_jax.rollout import SampleResult
from gift_jax.runtime import TrainState

CONFIG = ModelConfig(
    family="qwen2",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qkv_bias=True,
)


def _rollouts(rows=16, prompt=6, new=8, seed=0):
    rng = np.random.RandomState(seed)
    prompt_mask = np.ones((rows, prompt), np.int32)
    prompt_mask[::3, :2] = 0  # some left padding
    lengths = rng.randint(1, new + 1, rows)
    completion_mask = (np.arange(new)[None] < lengths[:, None]).astype(np.int32)
    result = SampleResult(
        prompt_ids=rng.randint(1, 64, (rows, prompt)).astype(np.int32),
        prompt_mask=prompt_mask,
        completion_ids=(rng.randint(1, 64, (rows, new)) * completion_mask).astype(np.int32),
        completion_mask=completion_mask,
        lengths=lengths.astype(np.int32),
        truncated=lengths == new,
        logprobs=np.zeros((rows, new), np.float32),
        entropies=np.zeros((rows, new), np.float32),
    )
    return update_batch(result, rng.randn(rows).astype(np.float32))


def _run(mesh, num_micro, **algo):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.device_put(params, state_shardings(params, mesh))
    # Plain SGD: Adam's first steps are ~lr * sign(g) and would magnify float-summation-order noise.
    tx = optax.sgd(0.5)
    config = RLStepConfig(algo=AlgoSection(chunk_size=4, **algo), num_micro=num_micro)
    state = TrainState(params, jax.jit(tx.init)(params), jnp.zeros((), jnp.int32))
    rollouts = _rollouts()
    if config.algo.rollout_correction is not None:  # weights as `rollout_mismatch` would give them
        rollouts["is_weights"] = (
            np.random.RandomState(1).uniform(0.2, 2.0, rollouts["targets"].shape).astype(np.float32)
        )
    batch = shard_batch(rollouts, mesh)
    logprob_fn = jax.jit(functools.partial(completion_logprobs, graphdef=graphdef, chunk_size=4))
    batch["old_logprobs"], _ = logprob_fn(state.params, batch)
    step = jax.jit(functools.partial(rl_train_step, graphdef=graphdef, tx=tx, config=config))
    metrics = None
    for _ in range(2):
        state, metrics = step(state, batch)
    return jax.tree.map(np.asarray, state.params), metrics


def test_sharded_step_equals_single_device():
    single = make_mesh(MeshConfig(fsdp=1), devices=jax.devices()[:1])
    sharded = make_mesh(MeshConfig(fsdp=4, tensor=2))
    params_1, metrics_1 = _run(single, num_micro=1)
    params_8, metrics_8 = _run(sharded, num_micro=1)
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_8)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(metrics_1["loss"], metrics_8["loss"], rtol=1e-4, atol=1e-6)


def test_micro_batches_accumulate_to_the_full_batch_update():
    mesh = make_mesh(MeshConfig(fsdp=8))
    for agg_mode in ("token-mean", "seq-mean-token-mean"):
        params_1, _ = _run(mesh, num_micro=1, agg_mode=agg_mode)
        params_2, _ = _run(mesh, num_micro=2, agg_mode=agg_mode)
        for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_2)):
            np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("policy_loss", ["gspo", "cispo"])
def test_gspo_and_cispo_with_correction_weights_are_exact_sharded_and_by_micro_batch(policy_loss):
    algo = dict(policy_loss=policy_loss, rollout_correction=RolloutCorrectionSection())
    single = make_mesh(MeshConfig(fsdp=1), devices=jax.devices()[:1])
    params_1, metrics_1 = _run(single, num_micro=1, **algo)
    params_8, metrics_8 = _run(make_mesh(MeshConfig(fsdp=4, tensor=2)), num_micro=2, **algo)
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_8)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(metrics_1["loss"], metrics_8["loss"], rtol=1e-4, atol=1e-6)
    unweighted, _ = _run(single, num_micro=1, policy_loss=policy_loss)
    assert (
        max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(unweighted))) > 1e-4
    )


@pytest.mark.slow  # three compilations of the update and two of the entropy
def test_entropy_bonus_reaches_the_gradient():
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    batch = _rollouts()
    logprob_fn = jax.jit(functools.partial(completion_logprobs, graphdef=graphdef, chunk_size=4))
    batch["old_logprobs"], _ = logprob_fn(params, batch)
    tx = optax.sgd(1.0)

    def grads_with(entropy_coef):
        config = RLStepConfig(algo=AlgoSection(entropy_coef=entropy_coef, chunk_size=4))
        state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
        step = jax.jit(functools.partial(rl_train_step, graphdef=graphdef, tx=tx, config=config))
        new_state, _ = step(state, batch)
        return jax.tree.leaves(jax.tree.map(lambda a, b: a - b, new_state.params, params))

    @jax.jit
    def mean_entropy(p):  # token mean over the completion mask, as the loss aggregates it
        _, entropy = completion_logprobs(p, batch, graphdef=graphdef, chunk_size=4, entropy_gradient=True)
        mask = batch["completion_mask"]
        return jnp.sum(entropy * mask) / jnp.sum(mask)

    coef = 0.5
    plain, bonus = grads_with(0.0), grads_with(coef)
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, bonus, strict=True)) > 1e-4
    # The loss carries -coef * H, so with SGD at lr 1 the bonus moves the parameters by exactly
    # +coef * dH/dtheta on top of the policy-gradient update: up the entropy, by coef times its slope.
    entropy_grad = jax.tree.leaves(jax.jit(jax.grad(mean_entropy))(params))
    for a, b, g in zip(plain, bonus, entropy_grad, strict=True):
        np.testing.assert_allclose(b - a, coef * np.asarray(g), rtol=1e-3, atol=1e-6)
    treedef = jax.tree.structure(params)
    moved, unmoved = (
        jax.tree.unflatten(treedef, [p + d for p, d in zip(jax.tree.leaves(params), update, strict=True)])
        for update in (bonus, plain)
    )
    assert float(mean_entropy(moved)) > float(mean_entropy(unmoved))


def test_rollout_logprobs_by_micro_batch_equal_one_pass_on_a_sharded_batch():
    mesh = make_mesh(MeshConfig(fsdp=4, tensor=2))
    graphdef, params = nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(0)), nnx.Param)
    params = jax.device_put(params, state_shardings(params, mesh))
    batch = shard_batch(_rollouts(), mesh)
    whole = jax.jit(functools.partial(completion_logprobs, graphdef=graphdef, chunk_size=4))(params, batch)
    by_micro = jax.jit(functools.partial(rollout_logprobs, graphdef=graphdef, chunk_size=4, num_micro=2))(params, batch)
    for a, b in zip(whole, by_micro):  # same rows in the same order
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
