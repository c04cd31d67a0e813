"""Rollouts (the static reference schedule) against the training forward: log-probs, greedy paths,
stopping, grouping, layout, compilation reuse."""

import jax
import numpy as np
import pytest
from flax import nnx

from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import MeshConfig, make_mesh, shard_model
from gift_jax.rollout import SamplingConfig, run_engine
from gift_jax.rollout.programs import generate_program
from tests.rollout.designed_model import bigram_model, chain, token_ids

TINY = ModelConfig(
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
PROMPTS = [[5, 9, 2], [7, 1, 4, 4, 8, 3, 11], [6], [12, 13, 14, 15, 16]]  # mixed lengths


def tiny_policy(seed: int = 0) -> Transformer:
    """Random weights of std 0.3 (the default init's 0.02 gives near-uniform next-token distributions)."""
    model = Transformer(TINY, rngs=nnx.Rngs(seed))
    state = nnx.state(model)
    keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: 0.3 * jax.random.normal(next(keys), x.shape), state))
    return model


@pytest.fixture(scope="module")
def policy() -> Transformer:
    return tiny_policy()


def _teacher_forced_logprobs(model, result, temperature):
    """`[B, N]` log-probs of the completion tokens from one full forward over prompt + completion."""
    ids = np.concatenate([result.prompt_ids, result.completion_ids], axis=1)
    mask = np.concatenate([result.prompt_mask, result.completion_mask], axis=1)
    logp = np.asarray(jax.nn.log_softmax(model(ids, attention_mask=mask) / temperature, axis=-1))
    width, n = result.prompt_ids.shape[1], result.completion_ids.shape[1]
    # Position width - 1 + t predicts completion token t.
    predicted = logp[:, width - 1 : width - 1 + n]
    return np.take_along_axis(predicted, result.completion_ids[..., None].astype(np.int64), -1)[..., 0]


_forward = nnx.jit(lambda model, ids, mask: model(ids, attention_mask=mask))


def _full_forward_greedy(model, prompt, steps, width=16):
    """Greedy continuation by re-running the whole (uncached) forward for every token.

    The sequence sits right-padded in a fixed-width buffer, so one compiled forward serves all steps.
    """
    ids, mask = np.zeros((1, width), np.int32), np.zeros((1, width), np.int32)
    ids[0, : len(prompt)], mask[0, : len(prompt)] = prompt, 1
    for t in range(len(prompt), len(prompt) + steps):
        ids[0, t] = int(np.argmax(np.asarray(_forward(model, ids, mask)[0, t - 1])))
        mask[0, t] = 1
    return ids[0, len(prompt) : len(prompt) + steps].tolist()


def test_logprobs_equal_teacher_forced_training_forward(policy):
    config = SamplingConfig(max_new_tokens=12, num_samples=2, temperature=0.7, top_p=0.9, top_k=20)
    result = run_engine(policy, PROMPTS, config, jax.random.key(1))[0]
    expected = _teacher_forced_logprobs(policy, result, temperature=0.7)
    on = result.completion_mask == 1
    assert on.sum() == 8 * 12
    assert np.abs(result.logprobs[on] - expected[on]).max() <= 1e-5
    assert (result.logprobs[on] < 0).all() and (result.entropies[on] > 0).all()


def test_designed_distribution_is_sampled_at_the_temperature():
    """A model that writes `\\boxed{` then 5 / 3 / B with probabilities .5 / .25 / .25, then `}` EOS."""
    box, eos = token_ids("\\boxed{"), 2
    five, three, letter_b, close = (token_ids(text)[0] for text in ("5", "3", "B", "}"))
    successors = {
        **chain(box, {five: 0.5, three: 0.25, letter_b: 0.25}),
        five: {close: 1.0},
        three: {close: 1.0},
        letter_b: {close: 1.0},
        close: {eos: 1.0},
    }
    model, _ = bigram_model(successors, {box[0]: 1.0}, vocab_size=320)
    temperature, n = 0.6, 256
    config = SamplingConfig(max_new_tokens=10, num_samples=n, temperature=temperature, stop_ids=(eos,))
    result = run_engine(model, [[5, 7, 11]], config, jax.random.key(5))[0]

    assert (result.lengths == 6).all() and not result.truncated.any()
    assert (result.completion_ids[:, [0, 1, 2, 4, 5]] == [*box, close, eos]).all()
    tempered = np.array([0.5, 0.25, 0.25]) ** (1 / temperature)
    tempered /= tempered.sum()
    drawn = result.completion_ids[:, 3]
    frequencies = np.array([np.mean(drawn == t) for t in (five, three, letter_b)])
    assert frequencies.sum() == 1.0
    assert np.abs(frequencies - tempered).max() < 4 * np.sqrt(0.25 / n)
    logprob_of = dict(zip((five, three, letter_b), np.log(tempered)))
    np.testing.assert_allclose(result.logprobs[:, 3], [logprob_of[t] for t in drawn], atol=1e-4)
    np.testing.assert_allclose(result.entropies[:, 3], -(tempered * np.log(tempered)).sum(), atol=1e-4)
    assert np.abs(result.entropies[:, [0, 1, 2, 4, 5]]).max() < 1e-6  # deterministic steps


def test_greedy_equals_full_forward_argmax(policy):
    result = run_engine(policy, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=0.0), jax.random.key(0))[0]
    for row, prompt in enumerate(PROMPTS):
        assert result.completion_ids[row].tolist() == _full_forward_greedy(policy, prompt, 8)
    assert result.truncated.all() and (result.lengths == 8).all()


def test_rows_stop_at_their_first_stop_token_and_are_padded_after(policy):
    n, pad = 10, 63
    free = run_engine(policy, PROMPTS, SamplingConfig(max_new_tokens=n, temperature=0.0), jax.random.key(0))[0]
    stop = int(free.completion_ids[0, 3])  # a token row 0 produces: some rows stop, maybe not all
    config = SamplingConfig(max_new_tokens=n, temperature=0.0, stop_ids=(stop,), pad_id=pad)
    result = run_engine(policy, PROMPTS, config, jax.random.key(0))[0]
    for row in range(len(PROMPTS)):
        hits = np.flatnonzero(free.completion_ids[row] == stop)
        length = int(hits[0]) + 1 if hits.size else n
        assert result.lengths[row] == length
        assert result.truncated[row] == (hits.size == 0)
        assert (result.completion_ids[row, :length] == free.completion_ids[row, :length]).all()
        assert (result.completion_ids[row, length:] == pad).all()
        assert result.completion_mask[row].tolist() == [1] * length + [0] * (n - length)
        assert (result.logprobs[row, length:] == 0).all()
    assert result.lengths[0] <= 4 and not result.truncated[0]


def test_samples_are_grouped_by_prompt(policy):
    config = SamplingConfig(max_new_tokens=6, num_samples=3, temperature=1.0)
    result = run_engine(policy, PROMPTS, config, jax.random.key(2))[0]
    assert result.completion_ids.shape == (12, 6)
    for i, prompt in enumerate(PROMPTS):
        for row in range(3 * i, 3 * i + 3):
            assert result.prompt_ids[row][result.prompt_mask[row] == 1].tolist() == prompt
    distinct = {tuple(c) for c in result.completion_ids[3:6].tolist()}
    assert len(distinct) > 1  # the samples of one prompt are independent draws


def test_top_k_one_and_tiny_top_p_equal_greedy(policy):
    greedy = run_engine(policy, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=0.0), jax.random.key(0))[0]
    for rule in ({"top_k": 1}, {"top_p": 1e-6}):
        result = run_engine(
            policy, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=1.5, **rule), jax.random.key(3)
        )[0]
        assert (result.completion_ids == greedy.completion_ids).all(), rule


def test_sharded_on_8_devices_equals_single_device():
    assert jax.device_count() == 8
    mesh = make_mesh(MeshConfig(fsdp=4, tensor=2))
    single, sharded = tiny_policy(), shard_model(tiny_policy(), mesh)
    prompts = PROMPTS[:3]  # 3 rows: padded to the 4-way batch split and trimmed again
    for config in (
        SamplingConfig(max_new_tokens=8, temperature=0.0),
        SamplingConfig(max_new_tokens=8, temperature=1.0, num_samples=2),
    ):
        a = run_engine(single, prompts, config, jax.random.key(4))[0]
        b = run_engine(sharded, prompts, config, jax.random.key(4), mesh=mesh)[0]
        assert a.completion_ids.shape == b.completion_ids.shape == (3 * config.num_samples, 8)
        assert (a.completion_ids == b.completion_ids).all()
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_no_recompilation_inside_a_bucket(policy):
    # Prefixes (all but the last prompt token) <= 16, budgets <= 16 and 3 or 4 rows share one bucket.
    calls = [([[1, 2, 3, 4, 5]] * 3, 5), ([[1] * 9, [2] * 12, [3], [4] * 2], 11), ([[3] * 16] * 3, 16)]

    def config(budget):
        return SamplingConfig(max_new_tokens=budget, temperature=0.9, stop_ids=(0,))

    run_engine(policy, calls[0][0], config(calls[0][1]), jax.random.key(0))
    compiled = generate_program._cache_size()
    for prompts, budget in calls[1:]:
        result = run_engine(policy, prompts, config(budget), jax.random.key(0))[0]
        assert result.completion_ids.shape == (len(prompts), budget)
    assert generate_program._cache_size() == compiled
    run_engine(
        policy, [[1] * 18] * 3, config(5), jax.random.key(0)
    )  # a 17-token prefix: the next bucket, one compilation
    assert generate_program._cache_size() == compiled + 1


def test_bad_prompts_are_rejected(policy):
    config = SamplingConfig(max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        run_engine(policy, [[1], []], config, jax.random.key(0))[0]
    with pytest.raises(ValueError, match=f"prompt 0 holds token id {TINY.vocab_size}"):
        run_engine(policy, [[TINY.vocab_size]], config, jax.random.key(0))[0]
    with pytest.raises(ValueError, match="stop / pad id 99"):
        run_engine(policy, [[1]], SamplingConfig(max_new_tokens=4, stop_ids=(99,)), jax.random.key(0))[0]
