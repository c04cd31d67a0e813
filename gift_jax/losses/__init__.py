"""Initialization-stage losses (GIFT and SFT-family baselines) and chunked log-probabilities.

Entry points: `compute_init_loss` (any registered loss plus metrics, as sums and a token count),
`gift_loss_from_hidden` (token-mean GIFT), `chunked_token_logprobs` (RL), and the logits-level
per-token losses for analysis and tests.
"""

from gift_jax.losses.baselines import (
    asft_token_loss,
    dft_token_loss,
    psft_token_loss,
    sft_entropy_token_loss,
    sft_token_loss,
)
from gift_jax.losses.chunking import DEFAULT_CHUNK_SIZE, map_logit_chunks, scan_token_chunks
from gift_jax.losses.gift import LOG_FLOOR, gift_token_loss
from gift_jax.losses.metrics import token_metrics
from gift_jax.losses.registry import (
    INIT_LOSSES,
    LOSS_NAMES,
    LOSS_NEEDS_OLD_LOGPROBS,
    LOSS_NEEDS_REFERENCE,
    InitLoss,
    LossOutput,
    compute_init_loss,
    gift_loss_from_hidden,
    init_loss_spec,
    loss_needs_old_logprobs,
    loss_needs_reference,
    resolve_init_loss_hparams,
)
from gift_jax.losses.token_logprobs import chunked_token_logprobs

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "INIT_LOSSES",
    "LOG_FLOOR",
    "LOSS_NAMES",
    "LOSS_NEEDS_OLD_LOGPROBS",
    "LOSS_NEEDS_REFERENCE",
    "InitLoss",
    "LossOutput",
    "asft_token_loss",
    "chunked_token_logprobs",
    "compute_init_loss",
    "dft_token_loss",
    "gift_loss_from_hidden",
    "gift_token_loss",
    "init_loss_spec",
    "loss_needs_old_logprobs",
    "loss_needs_reference",
    "map_logit_chunks",
    "psft_token_loss",
    "resolve_init_loss_hparams",
    "scan_token_chunks",
    "sft_entropy_token_loss",
    "sft_token_loss",
    "token_metrics",
]
