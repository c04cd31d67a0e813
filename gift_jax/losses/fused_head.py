"""A weighted sum of per-token losses over the lm head whose gradient is computed in the forward pass.

Every initialization loss reduces to `sum_t w_t loss_t(z_t)` with `z = h W` the logits. Plain
chunking (`map_logit_chunks`) keeps memory flat but pays for it in the backward pass, which
recomputes each chunk's policy logits *and* the base model's logits before it can form
`dL/dz`. Because the result is a scalar, its gradient is known up to one scalar factor (the
incoming cotangent) as soon as a chunk's logits exist, so this module forms it right there:

    g_z = d(sum_t w_t loss_t) / dz     [B, C, V], from the chunk's logits, then dropped
    dL/dh += g_z W^T                   [B, C, d], kept (the size of the hidden states)
    dL/dW += h^T g_z                   [d, V], accumulated across chunks

and the backward pass only scales the two by the cotangent. Per chunk that is four lm-head-sized
matmuls for a loss with a reference (policy and base logits, two gradient products) instead of
six, and three instead of four without one; no `[tokens, V]` buffer exists in either pass (the
same technique as the fused linear cross-entropy of Liger-Kernel). Called without
differentiation it runs the forward only and forms no gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gift_jax.losses.chunking import PyTree, check_head_pair, project_logits, token_chunker
from gift_jax.parallel.activations import BATCH, EMBED, VOCAB, constrain

# (logits [B, C, V], ref_logits [B, C, V] or None, chunk of token_inputs) -> (loss [B, C], aux)
TokenLossFn = Callable[[jax.Array, jax.Array | None, PyTree], tuple[jax.Array, PyTree]]


def fused_head_loss(
    token_fn: TokenLossFn,
    hidden: jax.Array,
    w_out: jax.Array,
    weights: jax.Array,
    token_inputs: PyTree,
    *,
    ref_hidden: jax.Array | None = None,
    ref_w_out: jax.Array | None = None,
    chunk_size: int,
) -> tuple[jax.Array, PyTree]:
    """`sum_t weights_t * loss_t` and the per-token `aux` of `token_fn`, chunked over the sequence.

    Args:
      token_fn: pure function of a chunk's policy logits `[B, C, V]` float32, the reference logits
        (or None) and the chunk of `token_inputs`, returning the per-token loss `[B, C]` and a pytree
        of `[B, C, ...]` statistics (logged, never differentiated).
      hidden: `[B, T, d]` policy final hidden states; w_out: `[d, V]` policy output projection.
      weights: `[B, T]` float token weights; positions with weight <= 0 contribute nothing to the
        value (even a non-finite loss there). Their gradient is zero as long as the loss's own
        derivative is finite there: sanitise the inputs of unsupervised positions (the registry does).
      token_inputs: pytree of `[B, T, ...]` per-token arrays (labels, ...); not differentiated.
      ref_hidden, ref_w_out: `[B, T, d_ref]`, `[d_ref, V]` of a frozen reference model, or None.
      chunk_size: sequence positions per chunk; a chunk holds a few `[B, chunk_size, V]` buffers.
    Returns:
      `(loss_sum, aux)`: scalar float32, differentiable w.r.t. `hidden` and `w_out` only, and `aux`
      with every leaf `[B, T, ...]`.
    """
    check_head_pair(hidden, w_out, ref_hidden, ref_w_out)
    if weights.shape != hidden.shape[:2]:
        raise ValueError(f"fused_head_loss: weights must be [B, T]={hidden.shape[:2]}, got {weights.shape}")
    to_chunks, from_chunks = token_chunker((hidden, weights, token_inputs), chunk_size, "fused_head_loss")

    def chunk_loss(logits, ref_h, ref_w, chunk_weights, inputs):
        ref_logits = (
            None
            if ref_h is None
            else jax.lax.stop_gradient(
                constrain(project_logits(constrain(ref_h, (BATCH, None, EMBED)), ref_w), (BATCH, None, VOCAB))
            )
        )
        loss, aux = token_fn(logits, ref_logits, inputs)
        weighted = jnp.where(chunk_weights > 0, chunk_weights * loss, 0.0)
        return jnp.sum(weighted), jax.lax.stop_gradient(aux)

    def chunks(h, ref_h, w_tokens, inputs):
        return jax.tree.map(to_chunks, (h, ref_h, w_tokens.astype(jnp.float32), inputs))

    # Everything is an explicit argument (nothing traced is closed over), so that the custom VJP
    # states each input's cotangent: only `h` and `w` get one.
    @jax.custom_vjp
    def loss_and_aux(h, w, ref_h, ref_w, w_tokens, inputs):
        def one_chunk(_, chunk):
            h_c, ref_c, weight_c, inputs_c = chunk
            logits = constrain(project_logits(constrain(h_c, (BATCH, None, EMBED)), w), (BATCH, None, VOCAB))
            return None, chunk_loss(logits, ref_c, ref_w, weight_c, inputs_c)

        _, (sums, aux) = jax.lax.scan(one_chunk, None, chunks(h, ref_h, w_tokens, inputs))
        return jnp.sum(sums), jax.tree.map(from_chunks, aux)

    def forward_with_gradient(h, w, ref_h, ref_w, w_tokens, inputs):
        def one_chunk(grad_w, chunk):
            h_c, ref_c, weight_c, inputs_c = chunk
            # Rows stay on their chips (the weight is gathered), and the [d, V] gradient stays
            # sharded like the weight: partial sums reduce-scatter rather than all-reduce.
            h_c = constrain(h_c, (BATCH, None, EMBED))
            (loss_sum, aux), grad_logits = jax.value_and_grad(chunk_loss, has_aux=True)(
                constrain(project_logits(h_c, w), (BATCH, None, VOCAB)), ref_c, ref_w, weight_c, inputs_c
            )
            grad_logits = constrain(grad_logits.astype(w.dtype), (BATCH, None, VOCAB))
            grad_h = jnp.einsum("bcv,dv->bcd", grad_logits, w, preferred_element_type=jnp.float32)
            grad_w = grad_w + jnp.einsum("bcd,bcv->dv", h_c, grad_logits, preferred_element_type=jnp.float32)
            grad_w = constrain(grad_w, ("embed", "vocab"))
            return grad_w, (loss_sum, aux, constrain(grad_h.astype(h.dtype), (BATCH, None, EMBED)))

        grad_w, (sums, aux, grad_h) = jax.lax.scan(
            one_chunk,
            constrain(jnp.zeros(w.shape, jnp.float32), ("embed", "vocab")),
            chunks(h, ref_h, w_tokens, inputs),
        )
        outputs = (jnp.sum(sums), jax.tree.map(from_chunks, aux))
        return outputs, (from_chunks(grad_h), grad_w)

    def scale_gradient(residuals, cotangents):
        grad_h, grad_w = residuals
        loss_cotangent = cotangents[0]  # aux is a statistic: its cotangent is ignored
        return (
            (loss_cotangent * grad_h).astype(grad_h.dtype),
            (loss_cotangent * grad_w).astype(w_out.dtype),
            None,
            None,
            None,
            None,
        )

    loss_and_aux.defvjp(forward_with_gradient, scale_gradient)
    return loss_and_aux(hidden, w_out, ref_hidden, ref_w_out, weights, token_inputs)
