"""A packed batch gives the init losses the same value and gradient as the same demonstrations padded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gift_jax.data.batching import collate_packed_batch, collate_sft_batch
from gift_jax.data.packing import best_fit_decreasing
from gift_jax.losses import compute_init_loss
from gift_jax.models import ModelConfig, Transformer

CONFIG = ModelConfig(
    family="qwen2",
    vocab_size=40,
    hidden_size=16,
    intermediate_size=32,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=4,
    qkv_bias=True,
)


def demonstrations(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length, prompt = int(rng.integers(5, 17)), int(rng.integers(2, 5))
        out.append((rng.integers(1, CONFIG.vocab_size, length).astype(np.int32), np.arange(length) >= prompt))
    return out


def loss_and_grads(attention, loss_name, batch):
    config = CONFIG.replace(attention=attention)
    graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)), nnx.Param)
    base = Transformer(config, rngs=nnx.Rngs(1))  # a different frozen base, so GIFT's reference term matters
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def loss(params):
        model = nnx.merge(graphdef, params)

        def hidden(m):
            return m.hidden_states(
                batch["input_ids"], batch["positions"], batch["attention_mask"], batch.get("segment_ids")
            )

        out = compute_init_loss(
            loss_name,
            hidden(model),
            model.output_projection(),
            batch["target_ids"],
            batch["loss_mask"],
            ref_hidden=hidden(base),
            ref_w_out=base.output_projection(),
            chunk_size=8,
        )
        return out.loss_sum, out.token_count

    (value, count), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return float(value), float(count), grads


@pytest.mark.parametrize("attention, loss_name", [("blockwise", "gift"), ("xla", "sft")])
def test_packed_batch_loss_and_gradient_equal_the_padded_batch(attention, loss_name):
    samples = demonstrations()
    padded = collate_sft_batch(samples, 16, pad_id=0)
    rows = best_fit_decreasing([len(t) - 1 for t, _ in samples], 32)
    assert len(rows) < len(samples)  # some rows really hold several demonstrations
    packed = collate_packed_batch([[samples[i] for i in row] for row in rows], 32, pad_id=0)

    value, count, grads = loss_and_grads(attention, loss_name, padded)
    packed_value, packed_count, packed_grads = loss_and_grads(attention, loss_name, packed)
    assert packed_count == count
    np.testing.assert_allclose(packed_value, value, rtol=1e-5)
    for (path, g), (_, r) in zip(
        jax.tree_util.tree_leaves_with_path(packed_grads), jax.tree_util.tree_leaves_with_path(grads), strict=True
    ):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path))
