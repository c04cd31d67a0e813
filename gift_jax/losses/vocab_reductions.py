"""Streamed reductions over the vocabulary (last) axis that never store their `[..., V]` inputs.

Every reduction here is one multi-operand (variadic) `lax.reduce`. That form matters on XLA:CPU:
single-operand sums and maxima are handed to YNNPACK fusions, which cannot absorb iota/compare/
select producers and fuse a max with its elementwise consumers into a kernel that writes a full
`[..., V]` result, so a loss written with `jnp.sum` / `jnp.max` materialises one or more
`[tokens, V]` temporaries. Variadic reductions stay with XLA's own emitter, which fuses every
elementwise producer (masks, `exp`, products) into the reduction loop: the only `[..., V]` arrays
are the logits themselves. GPU and TPU backends fuse either form.

These are for forward passes (losses with a custom VJP, metrics under `stop_gradient`): JAX has no
differentiation rule for a general variadic reduce.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def _reduce_vocab(
    operands: Sequence[jax.Array], init_values: Sequence[float], combine: Callable
) -> tuple[jax.Array, ...]:
    """One fused pass over the last axis of several same-shaped arrays `[..., V]` -> `[...]` each."""
    if len(operands) < 2:
        raise ValueError(
            "a vocabulary reduction needs at least two operands (a single-operand "
            "reduce loses its fusion on XLA:CPU; see the module docstring)"
        )
    shape = operands[0].shape
    for operand in operands:
        if operand.shape != shape:
            raise ValueError(f"vocabulary reduction operands differ in shape: {shape} vs {operand.shape}")
    inits = tuple(jnp.asarray(init, operand.dtype) for init, operand in zip(init_values, operands))
    return tuple(jax.lax.reduce(tuple(operands), inits, combine, (len(shape) - 1,)))


def vocab_sums(*terms: jax.Array) -> tuple[jax.Array, ...]:
    """`sum(term, axis=-1)` for each of >= 2 float32 terms `[..., V]`, in one pass."""
    terms = tuple(term.astype(jnp.float32) for term in terms)
    return _reduce_vocab(terms, [0.0] * len(terms), lambda acc, new: tuple(a + b for a, b in zip(acc, new)))


def vocab_maxes(*xs: jax.Array) -> tuple[jax.Array, ...]:
    """`max(x, axis=-1)` for each of >= 2 float32 arrays `[..., V]`, in one pass."""
    xs = tuple(x.astype(jnp.float32) for x in xs)
    return _reduce_vocab(xs, [-jnp.inf] * len(xs), lambda acc, new: tuple(jnp.maximum(a, b) for a, b in zip(acc, new)))


def vocab_max_argmax(*xs: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...] | tuple[jax.Array, jax.Array]:
    """`(max, argmax)` over the last axis of each same-shaped `x [..., V]`, all in one pass.

    Ties go to the lowest index (as `jnp.argmax`). One array gives its `(max, argmax)`; several give
    a tuple of such pairs (one pass instead of one per array).
    """
    xs = tuple(x.astype(jnp.float32) for x in xs)
    index = jax.lax.broadcasted_iota(jnp.int32, xs[0].shape, xs[0].ndim - 1)

    def combine(acc, new):
        out = []
        for i in range(0, len(acc), 2):
            (acc_value, acc_index), (new_value, new_index) = acc[i : i + 2], new[i : i + 2]
            keep = (acc_value > new_value) | ((acc_value == new_value) & (acc_index < new_index))
            out += [jnp.where(keep, acc_value, new_value), jnp.where(keep, acc_index, new_index)]
        return tuple(out)

    flat = _reduce_vocab([a for x in xs for a in (x, index)], [v for _ in xs for v in (-jnp.inf, 0)], combine)
    pairs = tuple(zip(flat[0::2], flat[1::2]))
    return pairs[0] if len(pairs) == 1 else pairs
