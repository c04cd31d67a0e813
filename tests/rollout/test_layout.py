"""The decoding copy of the weights: compute dtype, replicated over the batch axes, same outputs."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.models import Transformer
from gift_jax.parallel import MeshConfig, make_mesh, shard_model, state_shardings
from gift_jax.rollout.layout import DECODE_RULES, decode_param_dtype, decoding_layout
from tests.rollout.test_sampler import TINY, tiny_policy


def test_decoding_copy_of_f32_master_weights_is_bf16_and_gives_the_same_logits():
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    mixed = TINY.replace(dtype="bfloat16", param_dtype="float32")
    policy = shard_model(Transformer(mixed, rngs=nnx.Rngs(0)), mesh)
    nnx.update(policy, nnx.state(tiny_policy()))  # std-0.3 weights: logits far from uniform
    decoding = decoding_layout(policy, mesh)

    params = jax.tree.leaves(nnx.state(decoding, nnx.Param))
    assert {x.dtype for x in params} == {jnp.dtype(jnp.bfloat16)}
    assert all("fsdp" not in str(x.sharding.spec) for x in params)  # replicated over the batch axes
    assert any("tensor" in str(x.sharding.spec) for x in params)  # still split over `tensor`
    assert {x.dtype for x in jax.tree.leaves(nnx.state(policy, nnx.Param))} == {jnp.dtype(jnp.float32)}

    # The forward casts every weight to bf16 before use, so the bf16 copy computes the same numbers as
    # f32 weights in the same layout (the fsdp layout itself sums in another order: not compared).
    graphdef, state = nnx.split(policy)
    same_layout = nnx.merge(graphdef, jax.device_put(state, state_shardings(state, mesh, DECODE_RULES)))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, TINY.vocab_size, (4, 12)), jnp.int32)
    np.testing.assert_array_equal(np.asarray(decoding(ids)), np.asarray(same_layout(ids)))


def test_decode_dtype_never_widens_the_stored_weights():
    assert decode_param_dtype(TINY.replace(dtype="bfloat16", param_dtype="float32")) == jnp.bfloat16
    assert decode_param_dtype(TINY.replace(dtype="float32", param_dtype="bfloat16")) == jnp.bfloat16
    assert decode_param_dtype(TINY) == jnp.float32
