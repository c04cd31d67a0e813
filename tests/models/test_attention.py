"""Attention backends against the `xla` reference: values and gradients, padded and packed rows."""

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gift_jax.models import ModelConfig, Transformer, attention as attention_module
from gift_jax.models.attention import causal_attention, resolve_backend, splash_attention


def _qkv(b, t, h, kv, d, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((b, t, h, d), (b, t, kv, d), (b, t, kv, d))
    )


def _segments(t):
    """Row 0 packed (two examples, then padding), row 1 one right-padded example, row 2 full."""
    seg = np.zeros((3, t), np.int32)
    seg[0, : t // 3], seg[0, t // 3 : t - 5] = 1, 2
    seg[1, : 2 * t // 3] = 1
    seg[2, :] = 1
    return jnp.asarray(seg)


def _masked_loss(attention, seg):
    """A scalar of the outputs at real positions (padding outputs are unspecified)."""

    def loss(q, k, v):
        out = attention(q, k, v, seg)
        weights = jnp.cos(jnp.arange(out.shape[-1]) + jnp.arange(out.shape[2])[:, None])
        return jnp.sum(jnp.where((seg != 0)[:, :, None, None], out, 0.0) * weights)

    return loss


def _assert_parity(attention, seg, qkv, tol=1e-5):
    real = (seg != 0)[:, :, None, None]

    def reference(*args):
        return causal_attention(*args, backend="xla")

    ref, out = (jax.jit(f)(*qkv, seg) for f in (reference, attention))
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, ref, 0), atol=tol, rtol=tol)
    grads, ref_grads = (
        jax.jit(jax.grad(_masked_loss(f, seg), argnums=(0, 1, 2)))(*qkv) for f in (attention, reference)
    )
    for name, g, r in zip("qkv", grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, atol=tol, rtol=tol, err_msg=f"d{name}")


@pytest.mark.parametrize("t, block", [(50, 16), (20, 64)])
def test_blockwise_matches_xla_values_and_gradients(t, block):
    """GQA (4 query heads on 2 kv heads), packed + padded + full rows, T off and on the block grid."""

    def blockwise(q, k, v, s):
        return causal_attention(q, k, v, s, backend="blockwise", block_size=block)

    _assert_parity(blockwise, _segments(t), _qkv(3, t, 4, 2, 8))


def test_blockwise_holds_no_t_by_t_buffer():
    """Forward + backward at T = 2048, block 128: no `[.., 2048, 2048]` array anywhere in the compiled
    HLO, and temporaries far below one f32 [T, T] score matrix per head."""
    t, h = 2048, 2
    q, k, v = (jax.ShapeDtypeStruct(s, jnp.float32) for s in ((1, t, h, 16), (1, t, 1, 16), (1, t, 1, 16)))
    seg = jax.ShapeDtypeStruct((1, t), jnp.int32)

    def loss(q, k, v, seg):
        return jnp.sum(causal_attention(q, k, v, seg, backend="blockwise", block_size=128) ** 2)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v, seg).compile()
    assert not re.search(rf"\[[\d,]*{t},{t}[\d,]*\]", compiled.as_text())
    scores_bytes = h * t * t * 4
    assert compiled.memory_analysis().temp_size_in_bytes < scores_bytes / 8


def test_transformer_backends_agree_on_padded_and_packed_batches():
    """The whole model: logits at real positions and parameter gradients, blockwise vs xla."""
    config = ModelConfig(
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
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(0, 64, (3, 40)), jnp.int32)
    seg = _segments(40)
    # per-example positions: restart at every segment start
    starts = np.concatenate([np.ones((3, 1), bool), np.diff(np.asarray(seg), axis=1) != 0], axis=1)
    index = np.arange(40)[None].repeat(3, 0)
    positions = jnp.asarray(index - np.maximum.accumulate(np.where(starts, index, 0), axis=1), jnp.int32)

    def loss_and_grads(attention):
        model = Transformer(config.replace(attention=attention), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(params):
            logits = nnx.merge(graphdef, params)(ids, positions, segment_ids=seg)
            return jnp.sum(jnp.where((seg != 0)[..., None], jax.nn.log_softmax(logits), 0.0)), logits

        (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return value, np.where((seg != 0)[..., None], logits, 0), grads

    ref_value, ref_logits, ref_grads = loss_and_grads("xla")
    value, logits, grads = loss_and_grads("blockwise")
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    for (path, g), (_, r) in zip(
        jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves_with_path(ref_grads), strict=True
    ):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_splash_kernel_matches_xla_in_interpret_mode():
    """The TPU kernel itself, run by the Pallas interpreter on CPU: packed + padded rows, GQA, T padded
    up to the kernel's 128 grid (head dim 128 as the kernel's lanes want)."""
    seg = _segments(100)[:2]

    def splash(q, k, v, s):
        return splash_attention(q, k, v, s, block_size=128, interpret=True)

    _assert_parity(splash, seg, _qkv(2, 100, 2, 1, 128))


def test_splash_runs_per_device_under_the_batch_mesh():
    """Under `jax.set_mesh` with a batch axis the kernel call sits inside a shard_map over it."""
    mesh = jax.make_mesh(
        (2, 1, 1), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=jax.devices()[:2]
    )
    seg = _segments(100)[:2]
    q, k, v = _qkv(2, 100, 2, 1, 128)
    with jax.set_mesh(mesh):
        fn = jax.jit(lambda q, k, v, s: splash_attention(q, k, v, s, block_size=128, interpret=True))
        assert "shard_map" in str(jax.make_jaxpr(fn)(q, k, v, seg))
        out = fn(q, k, v, seg)
    ref = causal_attention(q, k, v, seg, backend="xla")
    real = (seg != 0)[:, :, None, None]
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, ref, 0), atol=1e-5)


def test_auto_picks_per_platform_and_logs_once(caplog):
    attention_module._logged_choices.clear()  # earlier tests may have logged the CPU choice already
    with caplog.at_level(logging.WARNING, logger="gift_jax.models.attention"):
        assert resolve_backend("auto", "tpu") == "splash"
        assert resolve_backend("auto", "gpu") == "cudnn"
        assert resolve_backend("auto", "gpu", dtype=jnp.float32) == "blockwise"  # cuDNN: half precision only
        assert resolve_backend("auto", "cpu") == "blockwise"
        assert resolve_backend("auto", "cpu") == "blockwise"
        assert resolve_backend("xla", "tpu") == "xla"
    cpu_logs = [r.message for r in caplog.records if r.message.startswith("attention=auto on cpu")]
    assert cpu_logs == ["attention=auto on cpu: using the 'blockwise' backend"]
    with pytest.raises(ValueError, match="attention='flash'"):
        resolve_backend("flash")
    with pytest.raises(ValueError, match="attention='flash'"):
        ModelConfig(
            family="qwen2",
            vocab_size=8,
            hidden_size=8,
            intermediate_size=8,
            num_layers=1,
            num_heads=1,
            num_kv_heads=1,
            head_dim=8,
            attention="flash",
        )
