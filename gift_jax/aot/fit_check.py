"""Compile-only fit check: a training step compiled for a target (a TPU slice or the local backend)
from abstract inputs, and what the compiler says it needs per chip.

The step is the trainers' own (`jit_init_update`, `jit_rl_update`) with the trainers' shardings
and step settings; only shapes are needed (no weights, no data).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp

from gift_jax.aot.abstract_inputs import (
    abstract_batch,
    abstract_model,
    init_batch_spec,
    per_device_bytes,
    rl_batch_spec,
)
from gift_jax.aot.hlo_stats import collective_bytes, required_bytes_from_error
from gift_jax.aot.topologies import LOCAL, hbm_bytes_per_chip, topology_devices
from gift_jax.models import ModelConfig
from gift_jax.parallel import make_mesh
from gift_jax.rl.config import RLStageConfig, validate_rl_config
from gift_jax.rl.trainer import jit_rl_update, rl_step_config
from gift_jax.runtime.optim import make_optimizer
from gift_jax.runtime.train_state import abstract_train_state
from gift_jax.train.init_config import InitStageConfig, validate_init_config
from gift_jax.train.init_trainer import init_step_config, jit_init_update

STAGES = ("init", "rl", "rollout")


@dataclasses.dataclass
class FitReport:
    """Per-chip figures of one compiled step (bytes per chip unless said otherwise)."""

    stage: str
    topology: str
    chips: int
    hbm_bytes_per_chip: int | None
    argument_bytes: int
    output_bytes: int | None
    alias_bytes: int | None
    temp_bytes: int | None
    peak_bytes_per_chip: int
    fits: bool
    flops: float | None  # per chip, from the compiled HLO (a loop body counted once)
    model_bytes: int  # one full copy of the parameters in the compute dtype
    collective_bytes: dict[str, int]  # per kind, each collective instruction of the optimized HLO once
    shapes: dict  # what was compiled: layers, rows, sequence lengths, micro-batches, mesh
    error: str | None = None  # the compiler's out-of-memory message when it refused the step

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def _compile_report(
    jitted,
    args,
    *,
    stage: str,
    topology: str,
    devices,
    model_config: ModelConfig,
    shapes: dict,
    hlo_file: str | Path | None,
) -> FitReport:
    hbm = hbm_bytes_per_chip(topology, devices)
    argument_bytes = per_device_bytes(args)
    model_bytes = model_config.num_params() * jnp.dtype(model_config.jnp_dtype).itemsize
    common = dict(
        stage=stage,
        topology=topology,
        chips=len(devices),
        hbm_bytes_per_chip=hbm,
        model_bytes=model_bytes,
        shapes=shapes,
    )
    lowered = jitted.lower(*args)
    try:
        compiled = lowered.compile()
    except Exception as err:  # noqa: BLE001  jax raises its runtime error type for every compiler refusal
        message = str(err)
        if "RESOURCE_EXHAUSTED" not in message:
            raise
        required, what = required_bytes_from_error(message) or (None, None)
        temp = required if what == "temp" else None
        peak = (argument_bytes + required if what == "temp" else required) if required is not None else 0
        return FitReport(
            **common,
            argument_bytes=argument_bytes,
            output_bytes=None,
            alias_bytes=None,
            temp_bytes=temp,
            peak_bytes_per_chip=peak,
            fits=False,
            flops=None,
            collective_bytes={},
            error=message.strip().splitlines()[0][:500],
        )
    memory = compiled.memory_analysis()
    hlo = compiled.as_text()
    if hlo_file is not None:
        Path(hlo_file).write_text(hlo)
    # Everything the step holds at once: inputs, outputs not written over donated inputs, temporaries
    # (the compiler's own `peak_memory_in_bytes` is not filled in by every backend).
    peak = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return FitReport(
        **common,
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes,
        temp_bytes=memory.temp_size_in_bytes,
        peak_bytes_per_chip=peak,
        fits=hbm is None or peak <= hbm,
        flops=float(cost.get("flops", 0.0)) if cost else None,
        collective_bytes=collective_bytes(hlo),
    )


def init_step_fit(
    config: InitStageConfig,
    model_config: ModelConfig,
    *,
    topology: str = LOCAL,
    seq_len: int | None = None,
    hlo_file=None,
) -> FitReport:
    """Compiles the init stage's train step (GIFT / SFT family) for `topology`.

    `model_config`: the policy's architecture (e.g. `read_config(model.path)`); dtypes and remat are
    taken from `config.model` as the trainer does. `seq_len` defaults to `data.max_length`.
    """
    devices = topology_devices(topology)
    sizes = validate_init_config(config, num_devices=len(devices), check_paths=False)
    mc = config.model
    model_config = model_config.replace(
        dtype=mc.dtype, param_dtype=mc.param_dtype, remat=mc.remat, attention=mc.attention
    )
    mesh = make_mesh(config.mesh, devices=devices)
    step_config = init_step_config(config, sizes)
    graphdef, params = abstract_model(model_config, mesh)
    base_graphdef, base_params = graphdef, None
    if step_config.needs_reference:
        base_config = model_config.replace(param_dtype=mc.base_param_dtype or mc.param_dtype, remat=False)
        base_graphdef, base_params = abstract_model(base_config, mesh)
    tx = make_optimizer(config.optim, 1000)
    state = abstract_train_state(params, tx, mesh)
    step_fn = jit_init_update(step_config, state, mesh, graphdef=graphdef, base_graphdef=base_graphdef, tx=tx)
    length = seq_len or config.data.max_length
    psft = step_config.needs_old_logprobs
    rows = config.train.global_batch // config.loss.updates_per_batch
    batch = abstract_batch(init_batch_spec(rows, length, old_logprobs=psft), mesh)
    shapes = {
        "layers": model_config.num_layers,
        "rows": rows,
        "seq_len": length,
        "num_micro": step_config.num_micro,
        "rows_per_chip_per_micro": config.train.micro_batch_per_device,
        "mesh": dict(mesh.shape),
        "loss": config.loss.name,
        "remat": mc.remat,
        "dtype": mc.dtype,
        "param_dtype": mc.param_dtype,
    }
    return _compile_report(
        step_fn,
        (state, base_params, batch),
        stage="init",
        topology=topology,
        devices=devices,
        model_config=model_config,
        shapes=shapes,
        hlo_file=hlo_file,
    )


def rl_step_fit(
    config: RLStageConfig, model_config: ModelConfig, *, topology: str = LOCAL, prompt_length: int = 512, hlo_file=None
) -> FitReport:
    """Compiles the RL stage's GRPO update (one PPO mini-batch of `algo.mini_batch_prompts` x
    `rollout.group_size` rows of `prompt_length + rollout.max_new_tokens` tokens) for `topology`."""
    devices = topology_devices(topology)
    sizes = validate_rl_config(config, num_devices=len(devices), check_paths=False)
    m, a, r = config.model, config.algo, config.rollout
    model_config = model_config.replace(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attention=m.attention)
    mesh = make_mesh(config.mesh, devices=devices)
    step_config = rl_step_config(config, sizes)
    graphdef, params = abstract_model(model_config, mesh)
    tx = make_optimizer(config.optim, 1000)
    state = abstract_train_state(params, tx, mesh)
    step_fn = jit_rl_update(step_config, state, mesh, graphdef=graphdef, tx=tx)
    rows = a.mini_batch_prompts * r.group_size
    spec = rl_batch_spec(
        rows, prompt_length, r.max_new_tokens, expert=step_config.use_expert, reference=bool(a.kl_coef)
    )
    shapes = {
        "layers": model_config.num_layers,
        "rows": rows,
        "prompt_len": prompt_length,
        "completion_len": r.max_new_tokens,
        "num_micro": step_config.num_micro,
        "rows_per_chip_per_micro": config.train.micro_batch_per_device,
        "mesh": dict(mesh.shape),
        "remat": m.remat,
        "dtype": m.dtype,
        "param_dtype": m.param_dtype,
    }
    return _compile_report(
        step_fn,
        (state, abstract_batch(spec, mesh)),
        stage="rl",
        topology=topology,
        devices=devices,
        model_config=model_config,
        shapes=shapes,
        hlo_file=hlo_file,
    )


def rollout_fit(
    config: RLStageConfig, model_config: ModelConfig, *, topology: str = LOCAL, prompt_length: int = 512, hlo_file=None
) -> FitReport:
    """Compiles the static-batch sampler (`gift_jax.rollout.generate`) for one step's rollouts:
    `train.prompts_per_step` x `rollout.group_size` rows, `prompt_length` + `rollout.max_new_tokens`
    cache slots, parameters in the policy's storage dtype, as the trainer calls it."""
    from gift_jax.rollout.sampler import SamplingConfig, generate

    devices = topology_devices(topology)
    validate_rl_config(config, num_devices=len(devices), check_paths=False)
    m, r = config.model, config.rollout
    model_config = model_config.replace(dtype=m.dtype, param_dtype=m.param_dtype, remat=False)
    mesh = make_mesh(config.mesh, devices=devices)
    graphdef, params = abstract_model(model_config, mesh)
    sampling = SamplingConfig(
        max_new_tokens=r.max_new_tokens,
        num_samples=r.group_size,
        temperature=r.temperature,
        top_k=r.top_k,
        top_p=r.top_p,
        stop_ids=(0,),
        pad_id=0,
    )
    rows = config.train.prompts_per_step * r.group_size
    width, max_new_bucket = sampling.bucket(prompt_length), sampling.bucket(r.max_new_tokens)
    prompts = abstract_batch(
        {
            "ids": ((rows, width), jnp.int32),
            "mask": ((rows, width), jnp.int32),
            "budgets": ((rows,), jnp.int32),
            "keys": ((rows,), jax.random.key(0).dtype),
        },
        mesh,
    )
    jitted = jax.jit(
        functools.partial(
            generate,
            rule=sampling.token_rule(),
            stop_ids=sampling.stop_ids,
            pad_id=sampling.pad_id,
            max_new_bucket=max_new_bucket,
            mesh=mesh,
        ),
        static_argnums=0,
    )
    shapes = {
        "layers": model_config.num_layers,
        "rows": rows,
        "prompt_len": width,
        "max_new_tokens": max_new_bucket,
        "mesh": dict(mesh.shape),
        "dtype": m.dtype,
        "param_dtype": m.param_dtype,
    }
    args = (graphdef, params, prompts["ids"], prompts["mask"], prompts["keys"], prompts["budgets"])
    return _compile_report(
        jitted,
        args,
        stage="rollout",
        topology=topology,
        devices=devices,
        model_config=model_config,
        shapes=shapes,
        hlo_file=hlo_file,
    )
