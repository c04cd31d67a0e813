"""Initialization-stage losses by name: the one entry point the trainer calls.

`compute_init_loss(name, hidden, w_out, labels, mask, ...)` runs one chunked pass over the
sequence (`fused_head.py`, which forms the gradient in the same pass) that computes the chosen
per-token loss *and* the logging metrics from the same logits, and returns sums over supervised
tokens plus their count. Summing `loss_sum` and `token_count` over micro-batches and devices and
dividing once gives exactly the token mean of the whole batch, whatever the accumulation or sharding.

    name          hparams (default)                 needs
    gift          beta (20.0), smooth_lambda (0.0)  reference model
    sft           label_smoothing (0.0)
    sft_entropy   alpha (required)
    dft           -
    asft          gamma (required)                  reference model
    psft          clip_eps (0.2)                    old_logprobs (pre-update policy)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gift_jax.losses.baselines import (
    asft_token_loss,
    dft_token_loss,
    psft_token_loss,
    sft_entropy_token_loss,
    sft_token_loss,
)
from gift_jax.losses.chunking import DEFAULT_CHUNK_SIZE
from gift_jax.losses.fused_head import fused_head_loss
from gift_jax.losses.gift import gift_token_loss
from gift_jax.losses.metrics import token_metrics


class LossOutput(NamedTuple):
    """What one micro-batch contributes; divide summed `loss_sum` by summed `token_count`.

    loss_sum: scalar float32, `sum_t mask_t * loss_t` over the micro-batch (differentiable).
    token_count: scalar float32, `sum_t mask_t`.
    metrics: scalar float32 sums `sum_t mask_t * metric_t` (no gradient): `entropy`, `nll`, and,
      when the reference model was given, `kl_to_base` and `top1_agree`.
    """

    loss_sum: jax.Array
    token_count: jax.Array
    metrics: dict[str, jax.Array]


class TokenChunk(NamedTuple):
    """One chunk's inputs to a per-token loss; every array is `[B, C]` or `[B, C, V]`."""

    logits: jax.Array
    ref_logits: jax.Array | None
    labels: jax.Array
    old_logprobs: jax.Array | None


@dataclasses.dataclass(frozen=True)
class InitLoss:
    """A registered loss: `token_loss(chunk, **hparams) -> [B, C]` and what it needs."""

    token_loss: Callable[..., jax.Array]
    hparam_defaults: Mapping[str, float | None]  # None marks a required hyperparameter
    needs_reference: bool = False
    needs_old_logprobs: bool = False


INIT_LOSSES: Mapping[str, InitLoss] = MappingProxyType(
    {
        "gift": InitLoss(
            lambda c, **hp: gift_token_loss(c.logits, c.ref_logits, c.labels, **hp),
            {"beta": 20.0, "smooth_lambda": 0.0},
            needs_reference=True,
        ),
        "sft": InitLoss(lambda c, **hp: sft_token_loss(c.logits, c.labels, **hp), {"label_smoothing": 0.0}),
        "sft_entropy": InitLoss(lambda c, **hp: sft_entropy_token_loss(c.logits, c.labels, **hp), {"alpha": None}),
        "dft": InitLoss(lambda c: dft_token_loss(c.logits, c.labels), {}),
        "asft": InitLoss(
            lambda c, **hp: asft_token_loss(c.logits, c.ref_logits, c.labels, **hp),
            {"gamma": None},
            needs_reference=True,
        ),
        "psft": InitLoss(
            lambda c, **hp: psft_token_loss(c.logits, c.labels, c.old_logprobs, **hp),
            {"clip_eps": 0.2},
            needs_old_logprobs=True,
        ),
    }
)
LOSS_NAMES = tuple(INIT_LOSSES)
LOSS_NEEDS_REFERENCE = frozenset(n for n, spec in INIT_LOSSES.items() if spec.needs_reference)
LOSS_NEEDS_OLD_LOGPROBS = frozenset(n for n, spec in INIT_LOSSES.items() if spec.needs_old_logprobs)

# Allowed range of each hyperparameter: (predicate, description).
_HPARAM_RANGES: Mapping[str, tuple[Callable[[float], bool], str]] = MappingProxyType(
    {
        "beta": (lambda v: v >= 0.0, ">= 0"),
        "smooth_lambda": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
        "alpha": (lambda v: True, "finite"),
        "gamma": (lambda v: v >= 0.0, ">= 0"),
        "clip_eps": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
        "label_smoothing": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    }
)


def init_loss_spec(name: str) -> InitLoss:
    """The registered loss `name`; a ValueError lists the known names otherwise."""
    if name not in INIT_LOSSES:
        raise ValueError(f"unknown initialization loss {name!r}; known losses: {', '.join(LOSS_NAMES)}")
    return INIT_LOSSES[name]


def loss_needs_reference(name: str) -> bool:
    """Whether loss `name` needs the frozen base model's hidden states (an extra forward)."""
    return init_loss_spec(name).needs_reference


def loss_needs_old_logprobs(name: str) -> bool:
    """Whether loss `name` needs the pre-update policy's label log-probabilities."""
    return init_loss_spec(name).needs_old_logprobs


def resolve_init_loss_hparams(name: str, hparams: Mapping[str, object]) -> dict[str, float]:
    """Validates `hparams` for loss `name` and fills in defaults (call it when reading a config).

    Raises ValueError for an unknown loss, an unknown or missing hyperparameter, a non-numeric or
    non-finite value, or a value outside its range.
    """
    defaults = init_loss_spec(name).hparam_defaults
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        accepted = ", ".join(defaults) or "none"
        raise ValueError(f"loss {name!r} got unknown hyperparameter(s) {', '.join(unknown)}; it accepts: {accepted}")
    resolved = {}
    for key, default in defaults.items():
        value = hparams.get(key, default)
        if value is None:
            raise ValueError(f"loss {name!r} needs hyperparameter {key!r} (no default)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"loss {name!r}: hyperparameter {key!r} must be a Python number "
                f"(static), got {type(value).__name__} {value!r}"
            )
        in_range, description = _HPARAM_RANGES[key]
        if not math.isfinite(value) or not in_range(float(value)):
            raise ValueError(f"loss {name!r}: hyperparameter {key}={value!r} must be finite and {description}")
        resolved[key] = float(value)
    return resolved


def _check_token_array(array: jax.Array | None, shape: tuple[int, ...], what: str) -> None:
    if array is not None and array.shape != shape:
        raise ValueError(f"compute_init_loss: {what} must be [B, T]={shape}, got {array.shape}")


def compute_init_loss(
    name: str,
    hidden: jax.Array,
    w_out: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    *,
    ref_hidden: jax.Array | None = None,
    ref_w_out: jax.Array | None = None,
    old_logprobs: jax.Array | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    **hparams: float,
) -> LossOutput:
    """Loss sum, supervised-token count and metric sums of one micro-batch, in one chunked pass.

    Args:
      name: a key of `INIT_LOSSES`.
      hidden: `[B, T, d]` policy final hidden states (after the final norm).
      w_out: `[d, V]` policy output projection.
      labels: `[B, T]` int next-token targets aligned with the hidden positions; values at
        unsupervised positions are ignored (padding ids such as -100 are fine).
      mask: `[B, T]` float, 1 on supervised tokens (response + EOS), 0 elsewhere.
      ref_hidden, ref_w_out: `[B, T, d_ref]`, `[d_ref, V]` of the frozen base model; required by
        the losses in `LOSS_NEEDS_REFERENCE`, optional otherwise (they add `kl_to_base` and
        `top1_agree` to the metrics). Never differentiated.
      old_logprobs: `[B, T]` label log-probabilities under the pre-update policy; required by the
        losses in `LOSS_NEEDS_OLD_LOGPROBS` and rejected by the others.
      chunk_size: sequence positions per chunk; a chunk holds `[B, chunk_size, V]` logits.
      **hparams: the loss's hyperparameters (see `resolve_init_loss_hparams`).
    Returns:
      `LossOutput`; gradients of `loss_sum` reach `hidden` and `w_out` only.
    """
    spec = init_loss_spec(name)
    resolved = resolve_init_loss_hparams(name, hparams)
    if spec.needs_reference and (ref_hidden is None or ref_w_out is None):
        raise ValueError(f"loss {name!r} needs the base model: pass ref_hidden and ref_w_out")
    if spec.needs_old_logprobs != (old_logprobs is not None):
        raise ValueError(
            f"loss {name!r} "
            + (
                "needs old_logprobs (pre-update policy)"
                if spec.needs_old_logprobs
                else "does not use old_logprobs; do not compute them"
            )
        )
    token_shape = hidden.shape[:2]
    _check_token_array(labels, token_shape, "labels")
    _check_token_array(mask, token_shape, "mask")
    _check_token_array(old_logprobs, token_shape, "old_logprobs")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"compute_init_loss: labels must be integer token ids, got {labels.dtype}")

    weights = mask.astype(jnp.float32)
    supervised = weights > 0
    # Unsupervised positions may hold padding ids or garbage log-probs; make them harmless so
    # that `0 * loss` cannot be `0 * nan` in the loss or its gradient.
    safe_labels = jnp.where(supervised, labels, 0)
    safe_old_logprobs = None if old_logprobs is None else jnp.where(supervised, old_logprobs, 0.0)

    def token_fn(logits, ref_logits, inputs):
        chunk_labels, chunk_old_logprobs = inputs
        chunk = TokenChunk(logits, ref_logits, chunk_labels, chunk_old_logprobs)
        return (spec.token_loss(chunk, **resolved), token_metrics(logits, ref_logits, chunk_labels))

    loss_sum, metrics = fused_head_loss(
        token_fn,
        hidden,
        w_out,
        weights,
        (safe_labels, safe_old_logprobs),
        ref_hidden=ref_hidden,
        ref_w_out=ref_w_out,
        chunk_size=chunk_size,
    )

    def supervised_sum(values: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(supervised, weights * values, 0.0))

    return LossOutput(
        loss_sum=loss_sum,
        token_count=jnp.sum(jnp.where(supervised, weights, 0.0)),
        metrics={key: supervised_sum(value) for key, value in metrics.items()},
    )


def gift_loss_from_hidden(
    hidden: jax.Array,
    w_out: jax.Array,
    ref_hidden: jax.Array,
    ref_w_out: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    *,
    beta: float,
    smooth_lambda: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """Token-mean GIFT loss straight from final hidden states, never holding `[B, T, V]` logits.

    Args:
      hidden, w_out: `[B, T, d]` policy final hidden states and `[d, V]` output projection.
      ref_hidden, ref_w_out: `[B, T, d_ref]` and `[d_ref, V]` of the frozen base model.
      labels: `[B, T]` int next-token targets; mask: `[B, T]` float, 1 = supervised.
      beta, smooth_lambda: as in `gift_token_loss`.
      chunk_size: sequence positions per chunk.
    Returns:
      Scalar float32 `sum(mask * loss) / max(sum(mask), 1)`; gradients reach `hidden` and `w_out`,
      never the reference side.
    """
    out = compute_init_loss(
        "gift",
        hidden,
        w_out,
        labels,
        mask,
        ref_hidden=ref_hidden,
        ref_w_out=ref_w_out,
        chunk_size=chunk_size,
        beta=beta,
        smooth_lambda=smooth_lambda,
    )
    return out.loss_sum / jnp.maximum(out.token_count, 1.0)
