"""The engine on the 8-device CPU mesh: the decoding layout of the weights, same samples as one device."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from gift_jax.aot.hlo_stats import collectives
from gift_jax.parallel import MeshConfig, make_mesh, shard_model
from gift_jax.rollout import SamplingConfig, engine_programs, run_engine
from gift_jax.rollout.layout import decoding_layout
from gift_jax.rollout.programs import engine_shape
from tests.rollout.test_sampler import PROMPTS, tiny_policy

MESH = MeshConfig(data=1, fsdp=4, tensor=2)
pytestmark = pytest.mark.slow  # several compilations on the 8-device mesh


def test_engine_on_the_mesh_equals_one_device():
    config = SamplingConfig(
        max_new_tokens=10, num_samples=2, temperature=1.0, stop_ids=(3,), max_concurrent_rows=3, decode_steps_per_call=4
    )
    budgets = [4, 4, 10, 10]  # half the rows end after one decode call, one on each device
    single = run_engine(tiny_policy(), PROMPTS, config, jax.random.key(2), budgets=budgets)[0]
    mesh = make_mesh(MESH)
    sharded = shard_model(tiny_policy(), mesh)
    before = jax.tree.map(lambda x: x.sharding, nnx.state(sharded))
    result, stats = run_engine(sharded, PROMPTS, config, jax.random.key(2), mesh=mesh, budgets=budgets)
    assert stats.slots == 4  # 3 rounded up to the 4 batch devices
    np.testing.assert_array_equal(result.completion_ids, single.completion_ids)
    np.testing.assert_array_equal(result.lengths, single.lengths)
    np.testing.assert_allclose(result.logprobs, single.logprobs, atol=1e-5)
    assert jax.tree.map(lambda x: x.sharding, nnx.state(sharded)) == before  # training layout untouched
    # One sample per prompt in 8 slots: a row per device, the tail shrinks to 4 slots (a row block per
    # batch device). Sample 0 of each prompt draws what it drew among two samples (keyed draws).
    wide, wide_stats = run_engine(
        sharded,
        PROMPTS,
        dataclasses.replace(config, max_concurrent_rows=8, num_samples=1),
        jax.random.key(2),
        mesh=mesh,
        budgets=budgets,
    )
    assert wide_stats.slot_steps < wide_stats.decode_steps * 8
    np.testing.assert_array_equal(wide.completion_ids, single.completion_ids[::2])
    np.testing.assert_allclose(wide.logprobs, single.logprobs[::2], atol=1e-5)


def test_a_decode_mesh_of_its_own_equals_one_device():
    """Trained on a pure-FSDP mesh (fsdp 8), decoded on the same devices as fsdp 4 x tensor 2 (and a
    small pool that preempts): the same samples as one device, the training layout untouched."""
    config = SamplingConfig(
        max_new_tokens=10,
        num_samples=2,
        temperature=1.0,
        stop_ids=(3,),
        max_concurrent_rows=8,
        decode_steps_per_call=4,
        page_size=4,
        pages_per_device=7,
    )
    budgets = [4, 4, 10, 10]
    single = run_engine(
        tiny_policy(), PROMPTS, dataclasses.replace(config, pages_per_device=None), jax.random.key(3), budgets=budgets
    )[0]
    mesh = make_mesh(MeshConfig(data=1, fsdp=8, tensor=1))
    sharded = shard_model(tiny_policy(), mesh)
    before = jax.tree.map(lambda x: x.sharding, nnx.state(sharded))
    for tensor in (2, 1):
        result, stats = run_engine(
            sharded,
            PROMPTS,
            dataclasses.replace(config, decode_tensor=tensor),
            jax.random.key(3),
            mesh=mesh,
            budgets=budgets,
        )
        assert stats.slots == 8
        np.testing.assert_array_equal(result.completion_ids, single.completion_ids, err_msg=f"tensor {tensor}")
        np.testing.assert_allclose(result.logprobs, single.logprobs, atol=1e-5, err_msg=f"tensor {tensor}")
    assert jax.tree.map(lambda x: x.sharding, nnx.state(sharded)) == before


def test_decoding_layout_needs_fewer_collectives_per_token():
    """One decode step compiled from abstract shapes in both layouts; collectives counted in the HLO.

    With fsdp-sharded weights XLA:CPU keeps the hidden dimension split and all-reduces activations
    (19 all-reduces for this 2-layer model); replicated over the batch axes only the tensor-parallel
    ones remain.
    """
    mesh = make_mesh(MESH)
    training = shard_model(tiny_policy(), mesh)
    sampling = SamplingConfig(max_new_tokens=32, temperature=0.0, decode_steps_per_call=1)
    shape = engine_shape(sampling, slots=4, rows=8, longest_prompt=32, devices=4)
    programs = engine_programs(training.config, sampling, shape, mesh)
    totals = {}
    for name, model in (("training", training), ("decoding", decoding_layout(training, mesh))):
        targets = programs.compile_targets(*nnx.split(model), prompts=1, new_rows=1, width=16, writes=1)
        jitted, args, static = targets["decode_k_steps"]
        compiled = jitted.lower(*args, **static).compile()
        found = collectives(compiled.as_text())
        totals[name] = (sum(n for n, _ in found.values()), sum(b for _, b in found.values()))
    assert totals["training"][0] > 0
    assert totals["decoding"][0] < totals["training"][0] and totals["decoding"][1] < totals["training"][1], totals
