"""What a saved checkpoint step must match to be trusted: per-array checksums and a digest of its metadata.

`state_manifest(state, meta)` is computed before the save and stored in the step's own metadata (orbax
publishes a step's files together, so a finished step always holds its manifest); `verify_restored`
recomputes it from the restored arrays. Bytes flipped in place in a data file, a truncated file that
still decodes, or edited metadata then fail the restore like a missing file does, and the checkpointer
falls back to the previous step.

The checksum of an array is computed on its devices, where it lies, shard by shard and summed: each
element's bits times an odd weight unique to its position, added modulo 2^32. Any single flipped bit
changes it (the weight is odd), and so does moving values between positions. Non-finite floats are
reported too: a checkpoint holding NaN is never trained on or exported.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MANIFEST_KEY = "manifest"
_POSITION_PRIMES = (2654435761, 2246822519, 3266489917, 668265263, 374761393, 3575574671)
_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


class ManifestMismatch(ValueError):
    """A restored step differs from what was saved (names the array or the metadata)."""


def leaf_name(key_path) -> str:
    """`params/layers/0/mlp/...` for a pytree key path (the same for a TrainState and a `{"params": ...}` tree)."""
    parts = []
    for key in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def _leaf_digest(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`([] uint32 checksum, [] bool all finite)` of one array."""
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    else:
        bits = jax.lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
    weight = jnp.ones(x.shape, jnp.uint32)
    for axis in range(x.ndim):
        prime = jnp.uint32(_POSITION_PRIMES[axis % len(_POSITION_PRIMES)])
        weight = weight + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * prime
    checksum = jnp.sum(bits * (weight * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
    return checksum, finite


@jax.jit
def _digests(tree):
    return jax.tree.map(_leaf_digest, tree)


def array_digests(tree: Any) -> dict[str, tuple[int, bool]]:
    """`{leaf name: (checksum, all finite)}` of every array in `tree` (one device computation, one fetch)."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(_digests(tree)))[0]
    by_name: dict[str, list] = {}
    for key_path, value in leaves:  # each leaf's digest is a (checksum, finite) pair: two entries per name
        by_name.setdefault(leaf_name(key_path[:-1]), []).append(value)
    return {name: (int(np.asarray(c)), bool(np.asarray(f))) for name, (c, f) in by_name.items()}


def _meta_digest(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def first_nonfinite(digests: dict[str, tuple[int, bool]]) -> str | None:
    return next((name for name, (_, finite) in digests.items() if not finite), None)


def state_manifest(state: Any, meta: dict) -> dict:
    """The manifest of a step about to be saved: `{"arrays": {name: checksum}, "meta_sha256": ...}`.

    Raises `ManifestMismatch` when the state holds a non-finite value (such a state is never saved)."""
    digests = array_digests(state)
    bad = first_nonfinite(digests)
    if bad is not None:
        raise ManifestMismatch(f"the state to save holds non-finite values in {bad}")
    return {"arrays": {name: checksum for name, (checksum, _) in digests.items()}, "meta_sha256": _meta_digest(meta)}


def verify_restored(restored: Any, meta: dict, manifest: dict | None) -> None:
    """Raises `ManifestMismatch` naming the first array (or the metadata) that differs from `manifest`,
    or holds a non-finite value. `restored` may be a part of the saved state (its names must be in the
    manifest); a step saved before manifests existed (`manifest` None) gets the non-finite check alone."""
    digests = array_digests(restored)
    bad = first_nonfinite(digests)
    if bad is not None:
        raise ManifestMismatch(f"non-finite values in {bad}")
    if manifest is None:
        return
    if _meta_digest(meta) != manifest["meta_sha256"]:
        raise ManifestMismatch("the metadata does not match its checksum")
    for name, (checksum, _) in digests.items():
        if manifest["arrays"].get(name) != checksum:
            raise ManifestMismatch(f"checksum mismatch in {name}")
