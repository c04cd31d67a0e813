"""Compile-only fit check: a training step compiled for a target (a TPU slice or the local backend)
from abstract inputs, and what the compiler says it needs per chip.

The step is the trainers' own (`jit_init_update`, `jit_rl_update`) with the trainers' shardings
and step settings; only shapes are needed (no weights, no data).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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
from gift_jax.models.attention import resolve_backend
from gift_jax.models.paged_attention import backend_for
from gift_jax.parallel import batch_parallelism, make_mesh
from gift_jax.parallel.chips import chip_for
from gift_jax.rl.config import RLStageConfig, validate_rl_config
from gift_jax.rl.rollout_settings import needs_base, rollout_sampling
from gift_jax.rl.trainer import jit_rl_update, rl_step_config
from gift_jax.rollout.layout import DECODE_RULES, decode_mesh, decode_param_dtype
from gift_jax.rollout.plan import plan_decode
from gift_jax.rollout.programs import engine_programs, engine_shape, prefix_width, row_bucket
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
    # Held on each chip while the step runs without being one of its arguments (the RL training
    # state while rollouts decode); part of `peak_bytes_per_chip`.
    resident_bytes: int = 0
    estimate: dict | None = None  # `--estimate`: the roofline estimate of one RL step (`aot.estimate`)

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
    resident=None,
    static: dict | None = None,
) -> FitReport:
    """Compiles `jitted(*args, **static)` and reads back its per-chip figures; `resident`: a pytree
    of sharded `ShapeDtypeStruct`s held on the chips alongside the step (counted in the peak)."""
    hbm = hbm_bytes_per_chip(topology, devices)
    resident_bytes = per_device_bytes(resident) if resident is not None else 0
    argument_bytes = per_device_bytes(args)
    model_bytes = model_config.num_params() * jnp.dtype(model_config.jnp_dtype).itemsize
    common = dict(
        stage=stage,
        topology=topology,
        chips=len(devices),
        hbm_bytes_per_chip=hbm,
        model_bytes=model_bytes,
        shapes=shapes,
        resident_bytes=resident_bytes,
    )
    lowered = jitted.lower(*args, **(static or {}))
    try:
        compiled = lowered.compile()
    except Exception as err:  # noqa: BLE001  jax raises its runtime error type for every compiler refusal
        message = str(err)
        if "RESOURCE_EXHAUSTED" not in message:
            raise
        required, what = required_bytes_from_error(message) or (None, None)
        temp = required if what == "temp" else None
        peak = (argument_bytes + required if what == "temp" else required) if required is not None else 0
        peak += resident_bytes if required is not None else 0
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
        + resident_bytes
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


def _target(config, model_config: ModelConfig, topology: str, validate, *, training: bool = True):
    """`(devices, sizes, model_config, mesh)` of a stage config on `topology`: the config validated
    for its chip count, the architecture given the stage's dtypes (and remat / attention when training)."""
    devices = topology_devices(topology)
    sizes = validate(config, num_devices=len(devices), check_paths=False)
    m = config.model
    # `auto` is resolved for the target's chips, not this host (a TPU slice compiled here runs splash).
    attention = resolve_backend(m.attention, platform=devices[0].platform, dtype=jnp.dtype(m.dtype))
    extra = dict(remat=m.remat, attention=attention, scan_layers=m.scan_layers) if training else dict(remat=False)
    model_config = model_config.replace(dtype=m.dtype, param_dtype=m.param_dtype, **extra)
    return devices, sizes, model_config, make_mesh(config.mesh, devices=devices)


def _shapes(model_config: ModelConfig, mesh, **specific) -> dict:
    """What was compiled, for the report: the stage's own sizes plus layers, mesh and dtypes."""
    common = {"layers": model_config.num_layers, "mesh": dict(mesh.shape), "dtype": model_config.dtype}
    return {
        **common,
        **specific,
        "param_dtype": model_config.param_dtype,
        "remat": model_config.remat,
        "scan_layers": model_config.scan_layers,
        "attention": model_config.attention,
    }


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
    devices, sizes, model_config, mesh = _target(config, model_config, topology, validate_init_config)
    mc = config.model
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
    batch = abstract_batch(init_batch_spec(rows, length, old_logprobs=psft, packed=config.data.pack), mesh)
    shapes = _shapes(
        model_config,
        mesh,
        rows=rows,
        seq_len=length,
        num_micro=step_config.num_micro,
        rows_per_chip_per_micro=config.train.micro_batch_per_device,
        loss=config.loss.name,
        packed=config.data.pack,
    )
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
    devices, sizes, model_config, mesh = _target(config, model_config, topology, validate_rl_config)
    a, r = config.algo, config.rollout
    step_config = rl_step_config(config, sizes)
    graphdef, params = abstract_model(model_config, mesh)
    tx = make_optimizer(config.optim, 1000)
    state = abstract_train_state(params, tx, mesh)
    step_fn = jit_rl_update(step_config, state, mesh, graphdef=graphdef, tx=tx)
    rows = a.mini_batch_prompts * r.group_size
    spec = rl_batch_spec(
        rows,
        prompt_length,
        r.max_new_tokens,
        expert=step_config.use_expert,
        reference=bool(a.kl_coef),
        is_weights=a.rollout_correction is not None,
    )
    shapes = _shapes(
        model_config,
        mesh,
        rows=rows,
        prompt_len=prompt_length,
        completion_len=r.max_new_tokens,
        num_micro=step_config.num_micro,
        rows_per_chip_per_micro=config.train.micro_batch_per_device,
    )
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
    """Compiles the rollout engine's programs for one RL step's rollouts, as `run_engine` runs them.

    - the programs `engine_programs` builds from the run's own rollout settings
      (`rl.rollout_settings.rollout_sampling`: the token rule with top-k / top-p, the slots):
      `decode_k_steps` (the hot loop), `insert` (the first scheduling round: every slot filled,
      each prompt prefilled once for its samples) and, with `rollout.shrink_tail`, `shrink` (the
      first halving of the slots once no request waits);
    - the paged KV cache and the paged attention of the target's platform (the Pallas ragged
      paged-attention kernel on TPU);
    - the decode plan `run_engine` makes (`rollout.plan`): the decode mesh's tensor axis, slots and
      page pool from the HBM left with the training state and base resident;
    - the weights in the decoding layout on the decode mesh (`rollout.layout`: compute dtype,
      replicated over its batch axes, split over its `tensor`);
    - prompts of `prompt_length` tokens, output buffers for `train.prompts_per_step` x samples rows;
    - the training state (f32 master weights, optimizer state) and the frozen base (when the run
      loads it) stay on the chips meanwhile: `resident_bytes`; for `shrink` the decoding copy too.
    The report is the program with the largest peak; `shapes["programs"]` gives every peak.
    """
    devices, _, model_config, mesh = _target(config, model_config, topology, validate_rl_config, training=False)
    m = config.model
    _, train_params = abstract_model(model_config, mesh)
    resident = {"train_state": abstract_train_state(train_params, make_optimizer(config.optim, 1000), mesh)}
    if needs_base(config):
        base_config = model_config.replace(param_dtype=m.base_param_dtype or m.param_dtype)
        _, resident["base"] = abstract_model(base_config, mesh)
    decode_config = model_config.replace(param_dtype=str(decode_param_dtype(model_config)))
    sampling = rollout_sampling(config)
    rows = config.train.prompts_per_step * sampling.num_samples
    # The decode plan as the engine makes it: memory is what the chips have left with the training state
    # and base resident (a CPU target, like a run on CPU, keeps the mesh and the fixed slot rule).
    hbm = hbm_bytes_per_chip(topology, devices)
    memory = None if devices[0].platform == "cpu" else (hbm - per_device_bytes(resident), hbm)
    plan = plan_decode(
        sampling,
        decode_config,
        rows=rows,
        longest_row=prompt_length - 1 + config.rollout.max_new_tokens,
        chips=len(devices),
        mesh_tensor=mesh.shape["tensor"],
        memory=memory,
        chip=chip_for(devices[0].device_kind),
    )
    mesh = decode_mesh(mesh, plan.tensor)
    graphdef, params = abstract_model(decode_config, mesh, rules=DECODE_RULES)
    shape = engine_shape(
        sampling,
        slots=plan.slots,
        rows=row_bucket(rows, sampling),
        longest_prompt=prompt_length,
        devices=batch_parallelism(mesh),
        pages_per_device=plan.pages_per_device,
        backend=backend_for(devices[0].platform),
    )
    programs = engine_programs(decode_config, sampling, shape, mesh)
    # The first round fills every slot: slots / samples prompts prefilled, each written into its row's
    # pages and its template page (`rollout.admission`), every other row copying the template.
    prompts = row_bucket(-(-shape.slots // sampling.num_samples), sampling)
    targets = programs.compile_targets(
        graphdef,
        params,
        prompts=prompts,
        new_rows=row_bucket(shape.slots, sampling),
        width=prefix_width(sampling, prompt_length),
        writes=row_bucket(2 * prompts, sampling),
    )
    if not sampling.shrink_tail:
        targets.pop("shrink", None)
    shapes = _shapes(
        model_config,
        mesh,
        rows=rows,
        slots=shape.slots,
        slots_per_chip=shape.slots // batch_parallelism(mesh),
        decode_plan=plan.report(),
        page_size=shape.page_size,
        pages_per_slot=shape.pages_per_slot,
        pages=shape.pages,
        paged_attention=shape.backend,
        decode_steps_per_call=sampling.decode_steps_per_call,
        prefill_prompts=prompts,
        decode_param_dtype=str(decode_config.param_dtype),
        token_rule=dataclasses.asdict(programs.token_rule),
    )
    common = dict(stage="rollout", topology=topology, devices=devices, model_config=model_config, shapes=shapes)
    reports = {}
    for name, (jitted, args, static) in targets.items():
        # `shrink` does not take the weights, which stay on the chips meanwhile.
        held = {**resident, "decoding_weights": params} if name == "shrink" else resident
        hlo = hlo_file if name == "decode_k_steps" else None
        reports[name] = _compile_report(jitted, args, hlo_file=hlo, static=static, resident=held, **common)
    programs_peak = {name: rep.peak_bytes_per_chip for name, rep in reports.items()}
    report = max(reports.values(), key=lambda rep: rep.peak_bytes_per_chip)
    return dataclasses.replace(
        report, shapes={**shapes, "programs": programs_peak}, fits=all(rep.fits for rep in reports.values())
    )
