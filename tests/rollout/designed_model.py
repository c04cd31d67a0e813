"""A transformer whose next-token distributions are designed by hand: a bigram model in disguise.

With the attention and MLP outputs zeroed (`v_proj`, `o_proj`, `down_proj` = 0) the residual
stream is just the token embedding, so the next-token distribution depends only on the current
token. Embedding row `s` is `scale * e_i` for a state `i` of `s`, the final RMSNorm maps it to
`sqrt(d) * e_i`, and column `v` of the output projection holds the logit of `v` in state `i`.
The other weights (q, k, gate, up, norms) are random: they do not change the function but make
parameter comparisons between checkpoints meaningful.

Used with the tiny byte-level tokenizer of `tests.data.tiny_model`, this gives real HF folders
whose sampling probabilities, log-probs, entropies, accuracies and KL divergences are known exactly.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.models import ModelConfig, Transformer, save_hf
from tests.data.tiny_model import QWEN_STYLE_TEMPLATE, train_tiny_tokenizer

EOS, PAD = "<|im_end|>", "<|endoftext|>"
GAP = 40.0  # logit margin of designed tokens over all others: leftover mass ~ V * e^-40
EMBED_SCALE = 10.0  # large against RMSNorm's eps, so the normalised state is sqrt(d) e_i to ~1e-7


def designed_config(vocab_size: int, hidden_size: int = 32) -> ModelConfig:
    return ModelConfig(
        family="qwen2",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        qkv_bias=True,
        eos_token_id=2,
        pad_token_id=0,
    )


def bigram_model(
    successors: Mapping[int, Mapping[int, float]], default: Mapping[int, float], *, vocab_size: int, seed: int = 0
) -> tuple[Transformer, ModelConfig]:
    """A `Transformer` with `p(next | current) = successors[current]` (`default` for other tokens).

    Each distribution maps token ids to probabilities (summing to 1); unlisted tokens get ~0.
    """
    config = designed_config(vocab_size)
    d = config.hidden_size
    if len(successors) + 1 > d:
        raise ValueError(f"{len(successors)} designed states do not fit hidden size {d}")
    model = Transformer(config, rngs=nnx.Rngs(seed))
    state = nnx.state(model)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: 0.3 * jax.random.normal(next(keys), x.shape), state))

    embedding = np.zeros((vocab_size, d), np.float32)
    head = np.zeros((d, vocab_size), np.float32)
    embedding[:, 0] = EMBED_SCALE
    for state_index, (token, distribution) in enumerate([(None, default), *successors.items()]):
        if token is not None:
            embedding[token] = 0.0
            embedding[token, state_index] = EMBED_SCALE
        if not math.isclose(sum(distribution.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"successor probabilities of token {token} sum to {sum(distribution.values())}")
        for nxt, prob in distribution.items():
            head[state_index, nxt] = (math.log(prob) + GAP) / math.sqrt(d)
    model.embed_tokens.embedding[...] = jnp.asarray(embedding)
    model.lm_head.kernel[...] = jnp.asarray(head)
    model.norm.weight[...] = jnp.ones((d,))
    for layer in model.layers:  # the residual stream stays the embedding
        for linear in (layer.self_attn.v_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
            linear.kernel[...] = jnp.zeros_like(linear.kernel[...])
        layer.self_attn.v_proj.bias[...] = jnp.zeros_like(layer.self_attn.v_proj.bias[...])
    return model, config


def chain(tokens: list[int], branches: Mapping[int, float] | None = None) -> dict[int, dict[int, float]]:
    """Successors that walk `tokens` deterministically; after the last one come `branches` if given."""
    successors = {a: {b: 1.0} for a, b in itertools.pairwise(tokens)}
    if branches is not None:
        successors[tokens[-1]] = dict(branches)
    return successors


def save_with_tokenizer(model: Transformer, config: ModelConfig, folder: Path) -> Path:
    """Writes the HF checkpoint plus the tiny tokenizer with a Qwen-style chat template."""
    save_hf(model, config, folder)
    tiny_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": EOS,
                "pad_token": PAD,
                "chat_template": QWEN_STYLE_TEMPLATE,
            }
        )
    )
    return folder


@functools.cache
def tiny_tokenizer():
    """The data tests' byte-level BPE tokenizer (320 ids), trained once per process."""
    return train_tiny_tokenizer()


def token_ids(text: str) -> list[int]:
    return tiny_tokenizer().encode(text, add_special_tokens=False).ids
