"""A model's next-token probabilities at the toy world's branching positions.

GIFT's target at a position is `q(y*) = p e^beta / (1 - p + p e^beta)` with `p = p_base(y* | prefix)`,
so what the init stage will learn is read off the base's `p` where the expert's token is chosen: the
style header after `<|assistant|>` and the answer format after the work's `. `. These functions
measure those `p` on a real model (the shipped base, or any init) by teacher forcing.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.data.tokenizer import ChatTokenizer, load_tokenizer
from gift_jax.models import Transformer, load_hf
from gift_jax.toy import styles
from gift_jax.toy.task import Problem


@jax.jit
def _last_position_log_probs(graphdef, state, ids: jax.Array, lengths: jax.Array) -> jax.Array:
    """`nnx.split` model, ids `[B, T]` (right-padded), lengths `[B]` -> log-softmax at `lengths - 1`, `[B, V]`."""
    model: Transformer = nnx.merge(graphdef, state)
    logits = model(ids, attention_mask=jnp.arange(ids.shape[1]) < lengths[:, None])
    last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
    return jax.nn.log_softmax(last.astype(jnp.float32), axis=-1)


def next_token_log_probs(
    model: Transformer, prefixes: Sequence[Sequence[int]], *, pad_id: int = 0, batch: int = 256
) -> np.ndarray:
    """Log-probabilities of every next token after each prefix. Returns float64 `[len(prefixes), V]`.

    Prefixes are right-padded to one length per batch (the model is causal, so padding after the
    last real token changes nothing before it).
    """
    if not prefixes or any(len(p) == 0 for p in prefixes):
        raise ValueError("next_token_log_probs: every prefix needs at least one token")
    width = max(len(p) for p in prefixes)
    graphdef, state = nnx.split(model)
    out = []
    for start in range(0, len(prefixes), batch):
        chunk = prefixes[start : start + batch]
        ids = np.full((batch, width), pad_id, np.int32)  # fixed shape: one compile for every chunk
        lengths = np.ones(batch, np.int32)
        for row, prefix in enumerate(chunk):
            ids[row, : len(prefix)] = prefix
            lengths[row] = len(prefix)
        out.append(
            np.asarray(_last_position_log_probs(graphdef, state, jnp.asarray(ids), jnp.asarray(lengths)))[: len(chunk)]
        )
    return np.concatenate(out).astype(np.float64)


def header_probabilities(model: Transformer, tokenizer: ChatTokenizer, problems: Sequence[Problem]) -> dict[str, float]:
    """Mean probability of each style's header as the first response token, over `problems`."""
    log_probs = next_token_log_probs(model, [tokenizer.encode_prompt(p.prompt) for p in problems])
    return {
        style: float(np.exp(log_probs[:, _token_id(tokenizer, header)]).mean())
        for style, header in styles.STYLE_HEADERS.items()
    }


def boxed_probability_after(
    model: Transformer, tokenizer: ChatTokenizer, problems: Sequence[Problem], style: str
) -> float:
    """Mean probability of `\\boxed{` at the answer-format position after `style`'s correct work."""
    prefixes = [tokenizer.encode_prompt(p.prompt) + tokenizer.encode(styles.render_work(p, style)) for p in problems]
    log_probs = next_token_log_probs(model, prefixes)
    return float(np.exp(log_probs[:, _token_id(tokenizer, styles.BOXED_PREFIX)]).mean())


def response_token_log_probs(
    model: Transformer, tokenizer: ChatTokenizer, problems: Sequence[Problem], style: str, *, boxed: bool = True
) -> list[np.ndarray]:
    """log p(y*_t | prefix) of every response token of `style`'s solution (EOS included), per problem.

    The GIFT target's `p` at every position of such a demonstration. Returns one float64 `[len]`
    array per problem (token order of the response).
    """
    prompts = [tokenizer.encode_prompt(p.prompt) for p in problems]
    responses = [tokenizer.encode(styles.render_solution(p, style, boxed=boxed)) + [tokenizer.eos_id] for p in problems]
    prefixes = [prompt + response[:t] for prompt, response in zip(prompts, responses) for t in range(len(response))]
    log_probs = next_token_log_probs(model, prefixes)
    out, row = [], 0
    for response in responses:
        out.append(log_probs[np.arange(row, row + len(response)), response])
        row += len(response)
    return out


def _token_id(tokenizer: ChatTokenizer, symbol: str) -> int:
    ids = tokenizer.encode(symbol)
    if len(ids) != 1:
        raise ValueError(f"{symbol!r} is not one token of the toy vocabulary (encodes to {ids})")
    return ids[0]


def measure_branching(model_dir, problems: Sequence[Problem], expert_style: str) -> dict:
    """The numbers GIFT's target is made of, for the model in `model_dir` (an HF folder).

    Returns: `header` (style -> mean p of its header), `boxed_after` (style -> mean p of `\\boxed{`
    after that style's work), and for the expert's boxed solution `expert_min_log_p_median` (the
    median over problems of the least likely expert token's log p) with `expert_positions_below`
    (threshold -> mean count of expert tokens per solution with p below it).
    """
    model, _ = load_hf(model_dir)
    tokenizer = load_tokenizer(model_dir)
    traces = response_token_log_probs(model, tokenizer, problems, expert_style)
    return {
        "header": header_probabilities(model, tokenizer, problems),
        "boxed_after": {s: boxed_probability_after(model, tokenizer, problems, s) for s in styles.STYLES},
        "expert_min_log_p_median": float(np.median([t.min() for t in traces])),
        "expert_positions_below": {
            f"{threshold:g}": float(np.mean([(t < np.log(threshold)).sum() for t in traces]))
            for threshold in (1e-2, 1e-4, 1e-6)
        },
    }
