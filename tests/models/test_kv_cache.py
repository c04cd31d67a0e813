"""Prefill + single-token decode through the KV cache equals the full forward."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.models import ModelConfig, Transformer, init_cache
from gift_jax.models.transformer import write_at

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


def _randomised(config, seed=0):
    model = Transformer(config, rngs=nnx.Rngs(seed))
    state = nnx.state(model)
    keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: 0.3 * jax.random.normal(next(keys), x.shape), state))
    return model


def test_left_padded_prefill_then_decode_equals_full_forward():
    model = _randomised(CONFIG)
    rng = np.random.RandomState(0)
    prompt_lens, prompt_width, new = [3, 7, 5], 7, 6
    ids = rng.randint(1, 64, (3, prompt_width + new))
    mask = np.ones_like(ids)
    for row, n in enumerate(prompt_lens):
        mask[row, : prompt_width - n] = 0  # left padding
    full = np.asarray(model(ids, attention_mask=mask))

    cache = init_cache(CONFIG, batch=3, max_len=prompt_width + new + 2)
    step_logits = []
    logits, cache = model.decode(ids[:, :prompt_width], cache, attention_mask=mask[:, :prompt_width])
    step_logits.append(np.asarray(logits))
    decode = nnx.jit(lambda m, tok, c: m.decode(tok, c))
    for t in range(prompt_width, prompt_width + new):
        logits, cache = decode(model, ids[:, t : t + 1], cache)
        step_logits.append(np.asarray(logits))
    cached = np.concatenate(step_logits, axis=1)
    real = mask == 1
    assert np.abs(cached[real] - full[real]).max() <= 1e-5
    assert int(cache.index) == prompt_width + new


def test_hidden_states_and_projection_give_logits():
    model = _randomised(CONFIG)
    ids = np.arange(10).reshape(2, 5)
    hidden = model.hidden_states(ids)
    assert hidden.shape == (2, 5, 32)
    np.testing.assert_allclose(hidden @ model.output_projection(), model(ids), atol=1e-5)


def test_remat_gives_same_gradients():
    ids = np.arange(12).reshape(2, 6)

    def loss(m):
        return jnp.mean(m(ids) ** 2)

    plain = _randomised(CONFIG)
    remat = _randomised(CONFIG.replace(remat=True))
    g1, g2 = nnx.grad(loss)(plain), nnx.grad(loss)(remat)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_per_row_and_shared_writes():
    buffer = jnp.zeros((2, 6), jnp.int32)
    np.testing.assert_array_equal(
        write_at(buffer, jnp.ones((2, 2), jnp.int32), jnp.array([0, 3]), axis=1),
        [[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]],
    )
    np.testing.assert_array_equal(
        write_at(buffer, jnp.ones((2, 2), jnp.int32), jnp.int32(4), axis=1), [[0, 0, 0, 0, 1, 1]] * 2
    )
