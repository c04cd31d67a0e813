"""Multi-process start-up: `jax.distributed.initialize()` when the launch environment asks for it.

TPU pods: set GIFT_DISTRIBUTED=1; JAX discovers the coordinator and process ids from the TPU metadata.
GPU / CPU hosts: set GIFT_COORDINATOR (host:port), GIFT_NUM_PROCESSES and GIFT_PROCESS_ID on every host.
"""

from __future__ import annotations

import os

import jax


def maybe_initialize_distributed() -> bool:
    """Initializes the JAX distributed runtime if the environment says so; returns whether it did."""
    coordinator = os.environ.get("GIFT_COORDINATOR")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["GIFT_NUM_PROCESSES"]),
            process_id=int(os.environ["GIFT_PROCESS_ID"]),
        )
        return True
    if os.environ.get("GIFT_DISTRIBUTED") == "1":
        jax.distributed.initialize()
        return True
    return False
