"""Rotary position embeddings in the Hugging Face "rotate half" convention (Llama / Qwen2)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from gift_jax.models.config import RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
    """`[head_dim // 2]` float32 inverse frequencies, with Llama-3 scaling when given.

    Computed in numpy float64 at trace time (a constant), matching transformers' `llama3` rule:
    long wavelengths are divided by `factor`, short ones kept, the band between interpolated.
    """
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling is not None:
        old_len = scaling.original_max_position_embeddings
        low_wavelen = old_len / scaling.low_freq_factor
        high_wavelen = old_len / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
        smooth = (old_len / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
        smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = np.where(is_medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, inv_freq: np.ndarray) -> jnp.ndarray:
    """Rotates `x` `[B, T, H, D]` by `positions` `[B, T]`; angles in float32, result in x.dtype."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
    cos = jnp.cos(jnp.concatenate([angles, angles], axis=-1))[:, :, None, :]
    sin = jnp.sin(jnp.concatenate([angles, angles], axis=-1))[:, :, None, :]
    half = x.shape[-1] // 2
    xf = x.astype(jnp.float32)
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)
