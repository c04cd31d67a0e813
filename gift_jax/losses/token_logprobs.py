"""Log-probabilities of given tokens (and the policy's entropy) from hidden states, for RL.

The GRPO loss needs `log pi(y_t | s_t)` of the sampled tokens, differentiably, for whole rollouts
of thousands of tokens; it never needs the `[B, T, V]` logits themselves. `chunked_token_logprobs`
runs the lm head chunk by chunk (`chunking.py`) and keeps only the per-token results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gift_jax.losses.chunking import DEFAULT_CHUNK_SIZE, map_logit_chunks
from gift_jax.losses.metrics import token_metrics
from gift_jax.losses.token_stats import entropy, label_log_prob


def chunked_token_logprobs(
    hidden: jax.Array,
    w_out: jax.Array,
    labels: jax.Array,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
    entropy_gradient: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Per-token `log softmax(logits / temperature)[label]` and entropy, chunked over the sequence.

    Args:
      hidden: `[B, T, d]` final hidden states (after the final norm).
      w_out: `[d, V]` output projection.
      labels: `[B, T]` int tokens whose log-probabilities are wanted. Ids outside `[0, V)`
        (padding such as -100) are read as token 0, so the caller's mask can drop them.
      chunk_size: sequence positions per chunk; a chunk holds `[B, chunk_size, V]` logits.
      temperature: the sampling temperature the tokens were drawn at (static, > 0).
      entropy_gradient: whether gradients flow through the entropy (for an entropy bonus);
        otherwise it is a stop-gradient statistic computed in a cheaper streamed form.
    Returns:
      `(logprobs, entropy)`, both `[B, T]` float32; `logprobs` is differentiable w.r.t. `hidden`
      and `w_out`.
    """
    if labels.shape != hidden.shape[:2] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"chunked_token_logprobs: labels must be int [B, T]={hidden.shape[:2]}, got {labels.dtype} {labels.shape}"
        )
    if not temperature > 0:
        raise ValueError(f"chunked_token_logprobs: temperature must be > 0, got {temperature!r}")

    def token_fn(logits, _, chunk_labels):
        scaled = logits / temperature
        if entropy_gradient:
            token_entropy = entropy(scaled)
        else:
            token_entropy = token_metrics(scaled, None, chunk_labels)["entropy"]
        return label_log_prob(scaled, chunk_labels), token_entropy

    vocab = w_out.shape[-1]
    safe_labels = jnp.where((labels >= 0) & (labels < vocab), labels, 0)
    return map_logit_chunks(token_fn, hidden, w_out, safe_labels, chunk_size=chunk_size)
