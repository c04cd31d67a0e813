"""Splitting a global batch into gradient-accumulation micro-batches and optimizer mini-batches.

Both splits are strided, not contiguous: with the batch split over devices in contiguous blocks,
every device then holds an equal share of every piece, so no rows move between devices.
"""

from __future__ import annotations

import jax


def split_micro_batches(batch: dict[str, jax.Array], num_micro: int) -> dict[str, jax.Array]:
    """`[B, ...]` -> `[num_micro, B // num_micro, ...]`, micro-batch `a` taking rows `a, a + A, ...`."""

    def one(x):
        b = x.shape[0]
        return x.reshape(b // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(one, batch)


def split_minibatches(batch: dict, n: int) -> list[dict]:
    """A batch -> `n` strided mini-batches, one optimizer update each (PSFT, PPO)."""
    return [jax.tree.map(lambda x, i=i: x[i::n], batch) for i in range(n)]


def map_micro_batches(fn, batch: dict[str, jax.Array], num_micro: int):
    """`fn` (rows in, per-row pytree `[b, ...]` out) applied one micro-batch at a time, rows back in order.

    For the no-grad forwards (validation, old / reference log-probs): a `lax.map` over the strided
    micro-batches of `split_micro_batches`, so peak activation memory is one micro-batch's, as in the
    update, however large the batch.
    """
    if num_micro == 1:
        return fn(batch)
    per_micro = jax.lax.map(fn, split_micro_batches(batch, num_micro))
    return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(-1, *y.shape[2:]), per_micro)
