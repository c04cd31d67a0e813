"""Mesh construction, sharded forward equals single-device forward, FSDP memory per device."""

import jax
import numpy as np
import pytest
from flax import nnx

from gift_jax.models import load_hf
from gift_jax.parallel import MeshConfig, fetch_global, make_mesh, place_global_batch, shard_batch
from tests.helpers import make_tiny_hf


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    make_tiny_hf(path, "qwen2")
    return path


def test_mesh_resolves_wildcard_and_rejects_bad_shapes():
    assert MeshConfig(data=2, fsdp=-1, tensor=2).resolve(8) == (2, 2, 2)
    assert make_mesh(MeshConfig()).shape == {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(ValueError, match="needs 6 devices but 8"):
        MeshConfig(data=2, fsdp=3, tensor=1).resolve(8)
    with pytest.raises(ValueError, match="not divisible by 3"):
        MeshConfig(data=3, fsdp=-1).resolve(8)
    with pytest.raises(ValueError, match="at most one may be -1"):
        MeshConfig(data=-1, fsdp=-1).resolve(8)


def test_sharded_forward_equals_single_device(folder):
    assert jax.device_count() == 8
    ids = np.random.RandomState(0).randint(0, 96, (8, 16))
    single, _ = load_hf(folder)
    expected = np.asarray(single(ids))
    mesh = make_mesh(MeshConfig(fsdp=4, tensor=2))
    model, _ = load_hf(folder, mesh=mesh)
    q = model.layers[0].self_attn.q_proj.kernel[...]
    assert tuple(q.sharding.spec) == ("fsdp", "tensor")
    batch = shard_batch({"ids": ids}, mesh)
    logits = jax.jit(lambda m, x: m(x))(model, batch["ids"])
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5)


def test_fsdp8_holds_at_most_a_sixth_per_device(folder):
    mesh = make_mesh(MeshConfig(fsdp=8))
    model, _ = load_hf(folder, mesh=mesh)
    leaves = jax.tree.leaves(nnx.state(model))
    total = sum(x.nbytes for x in leaves)
    device = jax.devices()[0]
    on_device = sum(s.data.nbytes for x in leaves for s in x.addressable_shards if s.device == device)
    assert on_device <= total / 6, (on_device, total)


def test_optimizer_state_is_sharded_like_the_parameters(folder):
    from gift_jax.runtime import init_train_state
    from gift_jax.runtime.optim import OptimConfig, make_optimizer

    mesh = make_mesh(MeshConfig(fsdp=8))
    model, _ = load_hf(folder, mesh=mesh)
    params = nnx.state(model, nnx.Param)
    state = init_train_state(params, make_optimizer(OptimConfig(), total_steps=10), mesh)
    param_specs = {tuple(x.sharding.spec) for x in jax.tree.leaves(params)}
    moment_specs = {tuple(x.sharding.spec) for x in jax.tree.leaves(state.opt_state) if x.ndim >= 2}
    assert ("fsdp", None) in param_specs or (None, "fsdp") in param_specs
    assert moment_specs <= param_specs and moment_specs != {()}


def test_global_batch_placement_and_fetch_round_trip():
    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    batch = {"ids": np.arange(48).reshape(8, 6), "flags": np.arange(8) % 3 == 0}
    placed = place_global_batch(batch, mesh)
    assert placed["ids"].sharding == shard_batch(batch, mesh)["ids"].sharding
    assert [s.data.shape for s in placed["ids"].addressable_shards] == [(1, 6)] * 8  # one row per device
    fetched = fetch_global(placed)
    for key in batch:
        np.testing.assert_array_equal(fetched[key], batch[key])
