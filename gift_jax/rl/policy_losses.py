"""Policy losses by name: PPO-clip, GSPO and CISPO as per-token functions of `[B, T]` arrays.

A policy loss is an importance ratio and an objective that turns the ratio into a per-token loss;
the registry names the pairs and their default settings:

| name | ratio | objective (loss to minimise) | defaults (clip_low, clip_high, agg_mode) |
|---|---|---|---|
| `ppo_clip` | `token_ratio`: `pi / pi_old` per token | `clipped_surrogate` | 0.2, 0.2, token-mean |
| `gspo` | `sequence_ratio`: `exp(mean_t log(pi / pi_old))` | `clipped_surrogate` | 3e-4, 4e-4, seq-mean-token-mean |
| `cispo` | `token_ratio` | `clipped_weight`: `-sg(clip(r)) * A * logp` | 1.0 (no lower bound), 4.0, token-mean |

GSPO (Zheng et al. 2025) uses the token-level stop-gradient form of its sequence ratio: each token
carries `sg(s_i) * pi_t / sg(pi_t)`, whose value is `s_i` and whose gradient flows through that
token's own log-prob (verl's `compute_policy_loss_gspo`). CISPO (MiniMax-M1, 2025) clips the
importance weight itself and stops its gradient, so no token's gradient is ever zeroed; its defaults
follow ScaleRL (Khatri et al. 2025), as TRL recommends: no lower bound, weights capped at 5. The
dual clip (Ye et al. 2020) caps the clipped surrogate of negative-advantage tokens, so it applies to
`ppo_clip` and `gspo` and not to `cispo` (whose weights are already bounded).

`policy_loss_per_token` looks a loss up, fills the settings left at None from its defaults, and
multiplies in any importance weights (`is_weights`, e.g. `rollout_correction_weights`) without
letting gradient into them. Adding a loss is one `POLICY_LOSSES` entry (and a ratio or objective
function if it needs a new one).
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


def token_ratio(logprobs: jax.Array, old_logprobs: jax.Array, mask: jax.Array | None) -> jax.Array:
    """`[B, T]` importance ratio `pi / pi_old` of each token (`mask` unused)."""
    del mask
    return jnp.exp(log_ratio(logprobs, old_logprobs))


def sequence_ratio(logprobs: jax.Array, old_logprobs: jax.Array, mask: jax.Array | None) -> jax.Array:
    """`[B, T]` GSPO's sequence ratio `s_i = exp(mean_t mask * (logp - logp_old))` on every token of row i,
    in the token-level stop-gradient form `sg(s_i) * exp(logp_t - sg(logp_t))`: value `s_i`, gradient `s_i`
    times the gradient of the token's own log-prob. Averaged over the row's tokens (seq-mean-token-mean)
    that gives GSPO's sequence-level gradient `s_i / |y_i| * sum_t grad logp_t`. An empty row's ratio is 1.
    """
    mask = jnp.ones_like(logprobs) if mask is None else mask.astype(jnp.float32)
    sequence_log_ratio = jnp.sum((logprobs - old_logprobs) * mask, axis=-1) / jnp.maximum(mask.sum(axis=-1), 1.0)
    token_log_ratio = jax.lax.stop_gradient(sequence_log_ratio)[:, None] + logprobs - jax.lax.stop_gradient(logprobs)
    return jnp.exp(jnp.clip(token_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def clipped_surrogate(
    ratio: jax.Array,
    advantages: jax.Array,
    logprobs: jax.Array | None = None,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip_c: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """PPO's pessimistic clipped surrogate of an importance ratio (all `[B, T]`), with optional dual clip.

    `loss = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))`; the gradient flows through the ratio
    (`logprobs` unused). Asymmetric bounds give DAPO's clip-higher. Dual clip (verl semantics): where
    `A < 0` the loss is further capped at `-A * dual_clip_c` (`dual_clip_c > 1`), so a token whose ratio
    exploded cannot push an unbounded negative-advantage update. Returns `(loss, clipped,
    dual_clipped)`: where the clipped branch, resp. the dual-clip cap, is active (no gradient there).
    """
    del logprobs
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


def clipped_weight(
    ratio: jax.Array,
    advantages: jax.Array,
    logprobs: jax.Array,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip_c: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CISPO's objective: `-sg(clip(r, 1 - clip_low, 1 + clip_high)) * A * logp` (all `[B, T]`).

    The gradient w.r.t. `logp` is `-A` times the clipped weight, also where the weight is clipped
    (the clipped surrogate zeroes those tokens' gradient instead). `clip_low = 1` leaves the weight
    unbounded below. Returns `(loss, clipped, all-false)`: `clipped` marks tokens whose weight was
    clipped (their gradient is scaled, not removed). `dual_clip_c` must be None.
    """
    if dual_clip_c is not None:
        raise ValueError("dual_clip_c does not apply to a clipped importance weight")
    weight = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = weight != ratio
    return -jax.lax.stop_gradient(weight) * advantages * logprobs, clipped, jnp.zeros_like(clipped)


@dataclasses.dataclass(frozen=True)
class PolicyLoss:
    """A registered policy loss: its ratio and objective, and the settings it defaults to."""

    name: str
    ratio: Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]
    objective: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
    clip_low: float
    clip_high: float
    agg_mode: AggMode
    dual_clip: bool  # whether `dual_clip_c` applies to it
    # Configs refuse clip_high at or above this (a surrogate's clip range is a fraction; a clipped
    # weight may be capped anywhere); None: no bound.
    max_clip_high: float | None = 1.0


POLICY_LOSSES: dict[str, PolicyLoss] = {
    loss.name: loss
    for loss in (
        PolicyLoss("ppo_clip", token_ratio, clipped_surrogate, 0.2, 0.2, "token-mean", dual_clip=True),
        PolicyLoss("gspo", sequence_ratio, clipped_surrogate, 3e-4, 4e-4, "seq-mean-token-mean", dual_clip=True),
        PolicyLoss("cispo", token_ratio, clipped_weight, 1.0, 4.0, "token-mean", dual_clip=False, max_clip_high=None),
    )
}


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


def policy_loss_per_token(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array | None = None,
    *,
    loss: str = "ppo_clip",
    clip_low: float | None = None,
    clip_high: float | None = None,
    dual_clip_c: float | None = None,
    is_weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The registered loss `loss` per token, times `is_weights` (`[B]` or `[B, T]`, no gradient).

    Args:
      logprobs, old_logprobs: `[B, T]` log-probabilities of the sampled tokens under the current and
        the rollout (old) policy.
      advantages: `[B]` (one per sequence) or `[B, T]`.
      mask: `[B, T]` the trained tokens; a sequence ratio averages over them (token ratios ignore it).
      clip_low, clip_high: None takes the loss's defaults (`POLICY_LOSSES`).
    Returns:
      `(loss [B, T], clipped [B, T] bool, dual_clipped [B, T] bool)`, see the objectives.
    """
    spec = resolve_policy_loss(loss, clip_low=clip_low, clip_high=clip_high, dual_clip_c=dual_clip_c)
    advantages = per_sequence_to_tokens(advantages, logprobs, "advantages")
    ratio = spec.ratio(logprobs, old_logprobs, mask)
    per_token, clipped, dual_clipped = spec.objective(
        ratio, advantages, logprobs, clip_low=spec.clip_low, clip_high=spec.clip_high, dual_clip_c=dual_clip_c
    )
    if is_weights is not None:
        per_token = per_token * jax.lax.stop_gradient(per_sequence_to_tokens(is_weights, logprobs, "is_weights"))
    return per_token, clipped, dual_clipped


def ppo_clip_per_token(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Token-level PPO clipped surrogate (loss to minimise): `policy_loss_per_token(loss="ppo_clip")`.

    Returns `(loss [B, T], clipped [B, T] bool, dual_clipped [B, T] bool)`, see `clipped_surrogate`.
    """
    return policy_loss_per_token(
        logprobs, old_logprobs, advantages, clip_low=clip_low, clip_high=clip_high, dual_clip_c=dual_clip_c
    )
