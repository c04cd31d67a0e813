"""`scan_layers`: the training forward as one scan over stacked layer weights equals the layer loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import MeshConfig, make_mesh, shard_model
from gift_jax.parallel.activations import activation_sharding

CONFIG = ModelConfig(
    family="qwen2",
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qkv_bias=True,
    attention="blockwise",
)


def _batch(rows=4, length=24):
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, CONFIG.vocab_size, (rows, length)), jnp.int32)
    # Two packed examples per row, then padding: segment ids and per-example positions.
    segments = np.zeros((rows, length), np.int32)
    segments[:, :10], segments[:, 10:20] = 1, 2
    positions = np.where(segments == 1, np.arange(length), np.arange(length) - 10).clip(0)
    return ids, jnp.asarray(positions, jnp.int32), jnp.asarray(segments)


def _loss_and_grads(config, mesh=None):
    model = Transformer(config, rngs=nnx.Rngs(0))
    if mesh is not None:
        model = shard_model(model, mesh)
    graphdef, params = nnx.split(model, nnx.Param)
    ids, positions, segments = _batch()

    @jax.jit
    def loss(params):
        with activation_sharding(mesh):
            hidden = nnx.merge(graphdef, params).hidden_states(ids, positions, segment_ids=segments)
        return jnp.sum(jnp.where(segments[..., None] > 0, hidden, 0.0) ** 2)

    return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_layers_give_the_loop_s_values_and_gradients(remat):
    loop_loss, loop_grads = _loss_and_grads(CONFIG.replace(remat=remat))
    scan_loss, scan_grads = _loss_and_grads(CONFIG.replace(remat=remat, scan_layers=True))
    np.testing.assert_allclose(scan_loss, loop_loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), scan_grads, loop_grads)


def test_scanned_layers_on_the_fsdp_mesh_with_bf16_compute():
    """f32 master weights, bf16 compute, 8 devices (fsdp 4 x tensor 2): the stacked bf16 weights
    are the weights the loop casts on use, so the loss matches the loop's to bf16 rounding."""
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    mixed = CONFIG.replace(dtype="bfloat16", remat=True)
    loop_loss, loop_grads = _loss_and_grads(mixed, mesh)
    scan_loss, scan_grads = _loss_and_grads(mixed.replace(scan_layers=True), mesh)
    np.testing.assert_allclose(scan_loss, loop_loss, rtol=2e-2)
    assert jax.tree.map(lambda g: g.dtype, scan_grads) == jax.tree.map(lambda g: g.dtype, loop_grads)  # f32
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(loop_grads))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-2 * scale), scan_grads, loop_grads)
