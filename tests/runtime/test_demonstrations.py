"""The micro-batched no-grad forwards of the init stage (validation, PSFT's old log-probs)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import MeshConfig, make_mesh, shard_batch, state_shardings
from gift_jax.runtime.batching import map_micro_batches, split_minibatches
from gift_jax.runtime.demonstrations import eval_step, policy_logprobs

CONFIG = ModelConfig(
    family="qwen2",
    vocab_size=40,
    hidden_size=16,
    intermediate_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=4,
    qkv_bias=True,
)


def test_map_micro_batches_returns_rows_in_their_original_order():
    batch = {"x": jnp.arange(24).reshape(12, 2)}
    out = jax.jit(lambda b: map_micro_batches(lambda mb: mb["x"] * 10, b, 3))(batch)
    np.testing.assert_array_equal(out, np.arange(24).reshape(12, 2) * 10)


def test_no_grad_forwards_by_micro_batch_equal_one_pass():
    mesh = make_mesh(MeshConfig(fsdp=4, data=2))
    graphdef, params = nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(0)), nnx.Param)
    params = jax.device_put(params, state_shardings(params, mesh))
    rng = np.random.RandomState(0)
    ids = rng.randint(1, CONFIG.vocab_size, (16, 10)).astype(np.int32)
    batch = shard_batch(
        {
            "input_ids": ids,
            "target_ids": np.roll(ids, -1, 1),
            "loss_mask": (rng.rand(16, 10) > 0.3).astype(np.float32),
            "attention_mask": np.ones(ids.shape, np.int32),
            "positions": np.tile(np.arange(10, dtype=np.int32), (16, 1)),
        },
        mesh,
    )
    for fn in (policy_logprobs, eval_step):
        whole = jax.jit(functools.partial(fn, graphdef=graphdef, chunk_size=4))(params, batch)
        by_micro = jax.jit(functools.partial(fn, graphdef=graphdef, chunk_size=4, num_micro=2))(params, batch)
        for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(by_micro), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_split_minibatches_takes_strided_rows_covering_the_batch_once():
    batch = {"input_ids": np.arange(16).reshape(8, 2), "loss_mask": np.arange(8)[:, None] % 3 == 0}
    minis = split_minibatches(batch, 4)
    assert len(minis) == 4
    for i, mini in enumerate(minis):
        np.testing.assert_array_equal(mini["input_ids"], batch["input_ids"][i::4])
        np.testing.assert_array_equal(mini["loss_mask"], batch["loss_mask"][i::4])
    rows = np.concatenate([mini["input_ids"][:, 0] for mini in minis]) // 2
    assert sorted(rows.tolist()) == list(range(8))
    # Strided, so a batch sharded in contiguous blocks over devices keeps rows of every block in each.
    assert [mini["input_ids"][:, 0].tolist() for mini in split_minibatches(batch, 2)] == [[0, 4, 8, 12], [2, 6, 10, 14]]
