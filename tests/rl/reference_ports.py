"""Published RL formulas ported line by line into numpy (float64), the independent references of
`test_policy_losses.py`, `test_rollout_correction.py` and `test_dapo.py`.

Sources (read from the repositories at these commits):
- verl, volcengine/verl @ b178a3cd56f58b2d502255daba591e92833930a7
  - verl/trainer/ppo/core_algos.py: `agg_loss`, `compute_policy_loss_vanilla`,
    `compute_policy_loss_gspo`, `compute_policy_loss_cispo`
  - verl/trainer/ppo/rollout_corr_helper.py: `compute_rollout_correction_weights`,
    `compute_rollout_rejection_mask` (options token_k1 / seq_sum_k1)
- TRL, huggingface/trl @ f2cd57710ae345ea6428ae95363267fcf38a3dc8
  - trl/rewards/other_rewards.py: `_SoftOverlongPunishment.__call__` (`get_soft_overlong_punishment`)

torch's `.detach()` becomes an argument: each loss takes the log-probs it differentiates
(`log_prob`) and the values the detached terms were computed from (`log_prob_detached`), so a
finite difference in `log_prob` alone is the gradient torch's autograd would give.
"""

import numpy as np

SAFETY_BOUND = 20.0  # rollout_corr_helper.SAFETY_BOUND


def masked_sum(values, mask, axis=None):
    return (values * mask).sum(axis=axis)


def masked_mean(values, mask, axis=None):  # verl.utils.torch_functional.masked_mean
    return masked_sum(values, mask, axis) / (mask.sum(axis=axis) + 1e-8)


def agg_loss(loss_mat, loss_mask, loss_agg_mode):
    """core_algos.agg_loss with dp_size = 1 and no global batch info."""
    if loss_agg_mode == "token-mean":
        return masked_sum(loss_mat, loss_mask) / loss_mask.sum()
    if loss_agg_mode == "seq-mean-token-mean":
        seq_mask = loss_mask.sum(axis=-1)
        seq_losses = (loss_mat * loss_mask).sum(axis=-1) / (seq_mask + 1e-8)
        seq_mask = (seq_mask > 0).astype(np.float64)
        return masked_sum(seq_losses, seq_mask) / seq_mask.sum()
    raise ValueError(loss_agg_mode)


def policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, *, clip_low, clip_high,
                        clip_ratio_c, rollout_is_weights=None):  # fmt: skip
    negative_approx_kl = np.clip(log_prob - old_log_prob, -20.0, 20.0)
    ratio = np.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * np.clip(ratio, 1 - clip_low, 1 + clip_high)
    clip_pg_losses1 = np.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = np.minimum(pg_losses3, clip_pg_losses1)
    pg_losses = np.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights
    return agg_loss(pg_losses, response_mask, loss_agg_mode)


def policy_loss_gspo(old_log_prob, log_prob, log_prob_detached, advantages, response_mask, *, clip_low, clip_high,
                     rollout_is_weights=None):  # fmt: skip
    negative_approx_kl_detached = log_prob_detached - old_log_prob
    seq_lengths = np.maximum(response_mask.sum(axis=-1), 1)
    negative_approx_kl_seq = (negative_approx_kl_detached * response_mask).sum(axis=-1) / seq_lengths
    log_seq_importance_ratio = log_prob - log_prob_detached + negative_approx_kl_seq[:, None]
    log_seq_importance_ratio = np.minimum(log_seq_importance_ratio, 10.0)
    seq_importance_ratio = np.exp(log_seq_importance_ratio)
    pg_losses1 = -advantages * seq_importance_ratio
    pg_losses2 = -advantages * np.clip(seq_importance_ratio, 1 - clip_low, 1 + clip_high)
    pg_losses = np.maximum(pg_losses1, pg_losses2)
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights
    return agg_loss(pg_losses, response_mask, "seq-mean-token-mean")


def policy_loss_cispo(old_log_prob, log_prob, log_prob_detached, advantages, response_mask, loss_agg_mode, *,
                      clip_low, clip_high, rollout_is_weights=None):  # fmt: skip
    ratio_detached = np.exp(np.clip(log_prob_detached - old_log_prob, -20.0, 20.0))
    clipped_ratio_sg = np.clip(ratio_detached, 1 - clip_low, 1 + clip_high)
    pg_losses = -clipped_ratio_sg * advantages * log_prob
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights
    return agg_loss(pg_losses, response_mask, loss_agg_mode)


def rollout_correction_weights(log_ratio, response_mask, rollout_is, rollout_is_threshold):
    """compute_rollout_correction_weights without batch normalisation (its default)."""
    if rollout_is == "token":
        weights = np.exp(np.clip(log_ratio, -SAFETY_BOUND, SAFETY_BOUND))
    else:
        log_ratio_sum = masked_sum(log_ratio, response_mask, axis=-1)[:, None]
        weights = np.broadcast_to(np.exp(np.clip(log_ratio_sum, -SAFETY_BOUND, SAFETY_BOUND)), log_ratio.shape)
    weights = weights * response_mask
    return np.minimum(weights, rollout_is_threshold)


def rollout_rejection_mask(log_ratio, response_mask, rollout_rs, upper):
    """compute_rollout_rejection_mask for one k1 option with the default lower bound 1 / upper.

    verl's k1 statistic is `-log_ratio` = log(pi_rollout / pi_trainer); with the symmetric default
    bounds, keeping it in [log(1/upper), log(upper)] keeps the weight in [1/upper, upper]."""
    lower_log, upper_log = np.log(1.0 / upper), np.log(upper)
    token_k1 = -np.clip(log_ratio, -SAFETY_BOUND, SAFETY_BOUND)
    if rollout_rs == "token_k1":
        keep = (token_k1 >= lower_log) & (token_k1 <= upper_log)
    elif rollout_rs == "seq_sum_k1":
        seq_stat = masked_sum(token_k1, response_mask, axis=-1)
        keep = np.broadcast_to(((seq_stat >= lower_log) & (seq_stat <= upper_log))[:, None], response_mask.shape)
    else:
        raise ValueError(rollout_rs)
    return response_mask * keep.astype(np.float64)


def soft_overlong_punishment(completion_lengths, max_completion_len, soft_punish_cache):
    rewards = []
    for completion_length in completion_lengths:
        if completion_length <= max_completion_len - soft_punish_cache:
            rewards.append(0.0)
        elif max_completion_len - soft_punish_cache < completion_length <= max_completion_len:
            rewards.append((max_completion_len - soft_punish_cache - completion_length) / soft_punish_cache)
        else:
            rewards.append(-1.0)
    return rewards


def numerical_gradient(fn, x, eps=1e-6):
    """Central differences of the scalar `fn` w.r.t. every element of the float64 array `x`."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (fn(x + step) - fn(x - step)) / (2 * eps)
    return grad
