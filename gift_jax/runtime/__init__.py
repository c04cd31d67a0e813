"""gift_jax.runtime: what both stages share (train state, batching, the accumulate-and-apply update,
optimizer, checkpoints, metrics, workdir, the run object). Imports no stage."""

from gift_jax.runtime.accumulate import accumulate_and_apply
from gift_jax.runtime.batching import (
    map_micro_batches,
    split_micro_batches,
    split_minibatches,
)
from gift_jax.runtime.train_state import TrainState, init_train_state

__all__ = [
    "TrainState",
    "accumulate_and_apply",
    "init_train_state",
    "map_micro_batches",
    "split_micro_batches",
    "split_minibatches",
]
