"""Policy losses by name: PPO-clip, GSPO and CISPO as per-token functions of `[B, T]` arrays.

Every registered loss has the same signature,

    per_token(logprobs, old_logprobs, advantages, *, mask, clip_low, clip_high, dual_clip_c)
        -> (loss [B, T], clipped [B, T] bool, dual_clipped [B, T] bool)

and differs from the others only in its importance ratio and in how the ratio enters the loss:

| name | ratio | loss (to minimise) | defaults (clip_low, clip_high, agg_mode) |
|---|---|---|---|
| `ppo_clip` | per token `pi / pi_old` | clipped surrogate | 0.2, 0.2, token-mean |
| `gspo` | per sequence, `exp(mean_t log(pi / pi_old))` | clipped surrogate | 3e-4, 4e-4, seq-mean-token-mean |
| `cispo` | per token | `-sg(clip(ratio)) * A * logprob` | 1.0 (no lower bound), 4.0, token-mean |

GSPO (Zheng et al. 2025) uses the token-level stop-gradient form of its sequence ratio: each token
carries `sg(s_i) * pi_t / sg(pi_t)`, whose value is `s_i` and whose gradient flows through that
token's own log-prob (verl's `compute_policy_loss_gspo`). CISPO (MiniMax-M1, 2025) clips the
importance weight itself and stops its gradient, so no token's gradient is ever zeroed; its defaults
follow ScaleRL (Khatri et al. 2025), as TRL recommends: no lower bound, weights capped at 5. The
dual clip (Ye et al. 2020) caps the clipped surrogate of negative-advantage tokens, so it applies to
`ppo_clip` and `gspo` and not to `cispo` (whose weights are already bounded).

`policy_loss_per_token` looks a loss up, fills the settings left at None from its defaults, and
multiplies in any importance weights (`is_weights`, e.g. `rollout_correction_weights`) without
letting gradient into them. Adding a loss is one function here with `@register_policy_loss`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, get_args

import jax
import jax.numpy as jnp

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
AGG_MODES = get_args(AggMode)

# Log-ratios are clamped before `exp`, as verl does: a token whose probability moved by more than
# e^20 would otherwise overflow the ratio (and its gradient) to inf in float32.
LOG_RATIO_CLAMP = 20.0

PerTokenLoss = Callable[..., tuple[jax.Array, jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class PolicyLoss:
    """A registered policy loss: its per-token function and the settings it defaults to."""

    name: str
    per_token: PerTokenLoss
    clip_low: float
    clip_high: float
    agg_mode: AggMode
    dual_clip: bool  # whether `dual_clip_c` applies to it


POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(name: str, *, clip_low: float, clip_high: float, agg_mode: AggMode, dual_clip: bool):
    """Registers a per-token loss under `name` with its default settings."""
    if agg_mode not in AGG_MODES:
        raise ValueError(f"policy loss {name!r}: agg_mode {agg_mode!r} is not one of {AGG_MODES}")

    def register(fn: PerTokenLoss) -> PerTokenLoss:
        POLICY_LOSSES[name] = PolicyLoss(name, fn, clip_low, clip_high, agg_mode, dual_clip)
        return fn

    return register


def resolve_policy_loss(
    name: str,
    *,
    clip_low: float | None = None,
    clip_high: float | None = None,
    agg_mode: AggMode | None = None,
    dual_clip_c: float | None = None,
) -> PolicyLoss:
    """The loss `name` with any of its settings replaced by the ones given (None keeps its default).

    Raises ValueError for an unknown name, or a dual clip asked of a loss it does not apply to."""
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; expected one of {sorted(POLICY_LOSSES)}")
    spec = POLICY_LOSSES[name]
    if dual_clip_c is not None and not spec.dual_clip:
        raise ValueError(f"dual_clip_c does not apply to the policy loss {name!r} (it has no clipped surrogate)")
    given = {"clip_low": clip_low, "clip_high": clip_high, "agg_mode": agg_mode}
    return dataclasses.replace(spec, **{key: value for key, value in given.items() if value is not None})


def per_sequence_to_tokens(values: jax.Array, like: jax.Array, name: str) -> jax.Array:
    """Broadcasts a per-sequence `[B]` array to `[B, T]` (shape of `like`); `[B, T]` passes through."""
    if values.shape == like.shape:
        return values
    if values.shape == like.shape[:1]:
        return jnp.broadcast_to(values[:, None], like.shape)
    raise ValueError(f"{name} must have shape [B]={like.shape[:1]} or [B, T]={like.shape}, got {values.shape}")


def log_ratio(logprobs: jax.Array, old_logprobs: jax.Array) -> jax.Array:
    """`log(pi / pi_old)` per token, clamped to +-LOG_RATIO_CLAMP. `[B, T]`."""
    return jnp.clip(logprobs - old_logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def clipped_surrogate(
    ratio: jax.Array, advantages: jax.Array, *, clip_low: float, clip_high: float, dual_clip_c: float | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """PPO's pessimistic clipped surrogate of an importance ratio (all `[B, T]`), with optional dual clip.

    `loss = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))`. Asymmetric bounds give DAPO's
    clip-higher. Dual clip (verl semantics): where `A < 0` the loss is further capped at
    `-A * dual_clip_c` (`dual_clip_c > 1`), so a token whose ratio exploded cannot push an unbounded
    negative-advantage update. Returns `(loss, clipped, dual_clipped)`: where the clipped branch,
    resp. the dual-clip cap, is active (the gradient is zero there).
    """
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(
            f"dual_clip_c must be > 1 (it caps the ratio of negative-advantage tokens from above), got {dual_clip_c}"
        )
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(unclipped_loss, clipped_loss)
    clipped = clipped_loss > unclipped_loss
    if dual_clip_c is None:
        return loss, clipped, jnp.zeros_like(clipped)
    cap = -advantages * dual_clip_c
    dual_clipped = (advantages < 0) & (loss > cap)
    return jnp.where(dual_clipped, cap, loss), clipped, dual_clipped


@register_policy_loss("ppo_clip", clip_low=0.2, clip_high=0.2, agg_mode="token-mean", dual_clip=True)
def ppo_clip_per_token(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float | None = None,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Token-level PPO clipped surrogate (loss to minimise), with optional dual clip.

    Args:
      logprobs, old_logprobs: `[B, T]` log-probabilities of the sampled tokens under the current
        and the rollout (old) policy.
      advantages: `[B]` (one per sequence) or `[B, T]`.
      mask: unused (each token's ratio is its own); accepted so every registered loss is called alike.
    Returns:
      `(loss [B, T], clipped [B, T] bool, dual_clipped [B, T] bool)`, see `clipped_surrogate`.
    """
    del mask
    advantages = per_sequence_to_tokens(advantages, logprobs, "advantages")
    ratio = jnp.exp(log_ratio(logprobs, old_logprobs))
    return clipped_surrogate(ratio, advantages, clip_low=clip_low, clip_high=clip_high, dual_clip_c=dual_clip_c)


@register_policy_loss("gspo", clip_low=3e-4, clip_high=4e-4, agg_mode="seq-mean-token-mean", dual_clip=True)
def gspo_per_token(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    *,
    mask: jax.Array,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip_c: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """GSPO's clipped surrogate on the sequence ratio `s_i = exp(mean_t mask * (logp - logp_old))`.

    Each token carries `sg(s_i) * exp(logp_t - sg(logp_t))`: value `s_i`, gradient `s_i` times the
    gradient of its own log-prob. With seq-mean-token-mean each token's loss is divided by the
    sequence's length, which gives GSPO's sequence-level gradient `s_i / |y_i| * sum_t grad logp_t`.

    Args:
      logprobs, old_logprobs, mask: `[B, T]`; the sequence mean runs over `mask` (an empty row's
        ratio is 1).
      advantages: `[B]` or `[B, T]`.
    Returns:
      `(loss [B, T], clipped [B, T] bool, dual_clipped [B, T] bool)`; a row is clipped as a whole.
    """
    advantages = per_sequence_to_tokens(advantages, logprobs, "advantages")
    mask = mask.astype(jnp.float32)
    sequence_log_ratio = jnp.sum((logprobs - old_logprobs) * mask, axis=-1) / jnp.maximum(mask.sum(axis=-1), 1.0)
    token_log_ratio = jax.lax.stop_gradient(sequence_log_ratio)[:, None] + logprobs - jax.lax.stop_gradient(logprobs)
    ratio = jnp.exp(jnp.clip(token_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    return clipped_surrogate(ratio, advantages, clip_low=clip_low, clip_high=clip_high, dual_clip_c=dual_clip_c)


@register_policy_loss("cispo", clip_low=1.0, clip_high=4.0, agg_mode="token-mean", dual_clip=False)
def cispo_per_token(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    *,
    clip_low: float = 1.0,
    clip_high: float = 4.0,
    dual_clip_c: float | None = None,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CISPO: `-sg(clip(r, 1 - clip_low, 1 + clip_high)) * A * logp`, `r = exp(logp - logp_old)`.

    The gradient w.r.t. `logp` is `-A` times the clipped weight, also where the weight is clipped
    (PPO-clip zeroes those tokens' gradient instead). `clip_low = 1` leaves the weight unbounded below.

    Args:
      logprobs, old_logprobs: `[B, T]`; advantages: `[B]` or `[B, T]`; mask: unused.
      dual_clip_c: must be None (see the module docstring).
    Returns:
      `(loss [B, T], clipped [B, T] bool, all-false [B, T])`: `clipped` marks tokens whose weight
      was clipped (their gradient is scaled, not removed).
    """
    del mask
    if dual_clip_c is not None:
        raise ValueError("dual_clip_c does not apply to cispo")
    advantages = per_sequence_to_tokens(advantages, logprobs, "advantages")
    ratio = jnp.exp(log_ratio(logprobs, old_logprobs))
    weight = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = -jax.lax.stop_gradient(weight) * advantages * logprobs
    clipped = weight != ratio
    return loss, clipped, jnp.zeros_like(clipped)


def policy_loss_per_token(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    loss: str = "ppo_clip",
    clip_low: float | None = None,
    clip_high: float | None = None,
    dual_clip_c: float | None = None,
    is_weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The registered loss `loss` per token, times `is_weights` (`[B]` or `[B, T]`, no gradient).

    Settings left at None take the loss's defaults (`POLICY_LOSSES`). Returns
    `(loss [B, T], clipped [B, T] bool, dual_clipped [B, T] bool)`.
    """
    spec = resolve_policy_loss(loss, clip_low=clip_low, clip_high=clip_high, dual_clip_c=dual_clip_c)
    per_token, clipped, dual_clipped = spec.per_token(
        logprobs,
        old_logprobs,
        advantages,
        mask=mask,
        clip_low=spec.clip_low,
        clip_high=spec.clip_high,
        dual_clip_c=dual_clip_c,
    )
    if is_weights is not None:
        per_token = per_token * jax.lax.stop_gradient(per_sequence_to_tokens(is_weights, logprobs, "is_weights"))
    return per_token, clipped, dual_clipped
