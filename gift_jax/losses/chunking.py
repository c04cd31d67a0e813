"""Per-token functions of the logits, evaluated chunk by chunk so `[tokens, V]` logits never exist whole.

A language-model head turns final hidden states `[B, T, d]` into logits `[B, T, V]`. With V in the
100k range and thousands of tokens per sequence, those logits (and their gradient) dominate the
memory of a training step, although every loss here reduces them to a few numbers per token.

`scan_token_chunks` cuts the sequence axis into chunks of `C` positions and maps a function over
them with `lax.map`; the function is wrapped in `jax.checkpoint`, so the backward pass recomputes a
chunk's logits instead of storing them. Peak memory is then a few `[B, C, V]` buffers plus the
per-token outputs, independent of `T`.

The chunks run along `T` and each covers all `B` rows: with the batch sharded over devices (data
parallel / FSDP), every device works on its own rows in every step, and the batch sharding of the
inputs carries through the reshapes unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gift_jax.parallel.activations import BATCH, EMBED, VOCAB, constrain

PyTree = Any

# Sequence positions per chunk. A chunk holds a few `[B, C, V]` float32 buffers (logits, reference
# logits, their gradient): at C = 256, V = 32768, d = 256 and B = 1 the gradient of a fused GIFT
# loss needs 100-112 MiB of XLA:CPU temporaries at any sequence length, and the lm-head matmuls
# are still large enough to run at full speed.
DEFAULT_CHUNK_SIZE = 256


def scan_token_chunks(chunk_fn: Callable[[PyTree], PyTree], token_arrays: PyTree, *, chunk_size: int) -> PyTree:
    """Maps `chunk_fn` over chunks of `chunk_size` sequence positions, rematerialised in backward.

    Args:
      chunk_fn: pure function from a pytree of `[B, C, ...]` arrays (the structure of
        `token_arrays`) to a pytree of `[B, C, ...]` per-token outputs. It may close over other
        arrays (weights); their gradients are accumulated across chunks.
      token_arrays: pytree of arrays `[B, T, ...]` sharing `B` and `T` (`None` leaves allowed).
      chunk_size: positions per chunk `C`; capped at `T`. `T` is zero-padded up to a multiple of
        `C` (padded positions are computed on zeros and dropped from the result).
    Returns:
      The pytree returned by `chunk_fn`, with every leaf stitched back to `[B, T, ...]`.
    """
    to_chunks, from_chunks = token_chunker(token_arrays, chunk_size, "scan_token_chunks")
    per_chunk = jax.lax.map(jax.checkpoint(chunk_fn), jax.tree.map(to_chunks, token_arrays))
    return jax.tree.map(from_chunks, per_chunk)


def token_chunker(
    token_arrays: PyTree, chunk_size: int, what: str
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]:
    """Validated `(to_chunks, from_chunks)` for token arrays `[B, T, ...]` sharing `B` and `T`.

    `to_chunks`: `[B, T, ...] -> [num_chunks, B, C, ...]`, zero-padding `T` up to a multiple of
    `C = min(chunk_size, T)`; `from_chunks` inverts it, dropping the padded positions. Errors name
    `what`.
    """
    leaves = jax.tree.leaves(token_arrays)
    if not leaves:
        raise ValueError(f"{what}: token_arrays holds no arrays")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{what}: chunk_size must be a positive int, got {chunk_size!r}")
    batch, length = leaves[0].shape[:2]
    for leaf in leaves:
        if leaf.shape[:2] != (batch, length):
            raise ValueError(
                f"{what}: every token array must start with [B, T]="
                f"{(batch, length)}, got an array of shape {leaf.shape}"
            )
    chunk = min(chunk_size, length)
    num_chunks = -(-length // chunk)
    padding = num_chunks * chunk - length

    def to_chunks(x: jax.Array) -> jax.Array:
        x = jnp.pad(x, [(0, 0), (0, padding)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(batch, num_chunks, chunk, *x.shape[2:]), 1, 0)

    def from_chunks(y: jax.Array) -> jax.Array:
        y = jnp.moveaxis(y, 0, 1)
        return y.reshape(batch, num_chunks * chunk, *y.shape[3:])[:, :length]

    return to_chunks, from_chunks


def project_logits(hidden: jax.Array, w_out: jax.Array) -> jax.Array:
    """Logits `[..., V]` float32 from hidden states `[..., d]` and an output projection `[d, V]`.

    Accumulates in float32 whatever the parameter dtype (bf16 logits lose the small differences
    between log-probabilities that every loss here depends on).
    """
    return jnp.einsum("...d,dv->...v", hidden, w_out, preferred_element_type=jnp.float32)


def check_head_inputs(hidden: jax.Array, w_out: jax.Array, what: str) -> None:
    """Raises a ValueError naming `what` unless hidden is `[B, T, d]` and w_out is `[d, V]`."""
    if hidden.ndim != 3:
        raise ValueError(f"{what}: hidden states must be [B, T, d], got shape {hidden.shape}")
    if w_out.ndim != 2 or w_out.shape[0] != hidden.shape[-1]:
        raise ValueError(f"{what}: output projection must be [d, V] with d={hidden.shape[-1]}, got shape {w_out.shape}")


def check_head_pair(
    hidden: jax.Array, w_out: jax.Array, ref_hidden: jax.Array | None, ref_w_out: jax.Array | None
) -> None:
    """Validates a policy head and an optional reference head over the same tokens and vocabulary."""
    check_head_inputs(hidden, w_out, "policy")
    if (ref_hidden is None) != (ref_w_out is None):
        raise ValueError("ref_hidden and ref_w_out must be given together (or both left None)")
    if ref_hidden is not None:
        check_head_inputs(ref_hidden, ref_w_out, "reference")
        if ref_hidden.shape[:2] != hidden.shape[:2]:
            raise ValueError(
                f"reference hidden states cover [B, T]={ref_hidden.shape[:2]}, the policy's cover {hidden.shape[:2]}"
            )
        if ref_w_out.shape[1] != w_out.shape[1]:
            raise ValueError(
                f"reference vocabulary V={ref_w_out.shape[1]} differs from the policy's V={w_out.shape[1]}"
            )


def map_logit_chunks(
    token_fn: Callable[[jax.Array, jax.Array | None, PyTree], PyTree],
    hidden: jax.Array,
    w_out: jax.Array,
    token_inputs: PyTree,
    *,
    ref_hidden: jax.Array | None = None,
    ref_w_out: jax.Array | None = None,
    chunk_size: int,
) -> PyTree:
    """Applies `token_fn(logits, ref_logits, inputs)` chunk by chunk over the sequence.

    Args:
      token_fn: pure function of the chunk's policy logits `[B, C, V]` float32, the reference
        logits `[B, C, V]` float32 (`None` when no reference is given; no gradient reaches them),
        and the chunk of `token_inputs`; returns a pytree of `[B, C, ...]` per-token values.
      hidden: `[B, T, d]` policy final hidden states (after the final norm).
      w_out: `[d, V]` policy output projection.
      token_inputs: pytree of `[B, T, ...]` per-token arrays (labels, old log-probs, ...).
      ref_hidden, ref_w_out: `[B, T, d_ref]` and `[d_ref, V]` of the frozen reference model, or
        both `None`.
      chunk_size: sequence positions per chunk.
    Returns:
      `token_fn`'s pytree with every leaf `[B, T, ...]`.
    """
    check_head_pair(hidden, w_out, ref_hidden, ref_w_out)

    def chunk_fn(chunk: PyTree) -> PyTree:
        policy_h, ref_h, inputs = chunk
        logits = constrain(project_logits(constrain(policy_h, (BATCH, None, EMBED)), w_out), (BATCH, None, VOCAB))
        ref_logits = None
        if ref_h is not None:
            ref_logits = jax.lax.stop_gradient(
                constrain(project_logits(constrain(ref_h, (BATCH, None, EMBED)), ref_w_out), (BATCH, None, VOCAB))
            )
        return token_fn(logits, ref_logits, inputs)

    return scan_token_chunks(chunk_fn, (hidden, ref_hidden, token_inputs), chunk_size=chunk_size)
