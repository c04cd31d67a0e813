"""Compile-only fit check: compile a training step for a TPU slice (or the local backend) from
abstract inputs and report per-chip memory, FLOPs and collective traffic."""

from gift_jax.aot.fit_check import STAGES, FitReport, init_step_fit, rl_step_fit, rollout_fit
from gift_jax.aot.hlo_stats import collective_bytes, collectives, required_bytes_from_error
from gift_jax.aot.topologies import LOCAL, TOPOLOGIES, Topology, topology_devices

__all__ = [
    "LOCAL",
    "STAGES",
    "TOPOLOGIES",
    "FitReport",
    "Topology",
    "collective_bytes",
    "collectives",
    "init_step_fit",
    "required_bytes_from_error",
    "rl_step_fit",
    "rollout_fit",
    "topology_devices",
]
