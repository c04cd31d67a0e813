"""Roofline estimates of one paper RL step on a target: the rollout phase, the old / reference
log-prob passes and the GRPO updates (`experiments/aot_compile.py --estimate`).

Everything here is analytic, from the model's shapes and the chip's datasheet figures
(`parallel.chips`); what the compile-only fit check contributes is the decode plan its compiled
programs use (the decode mesh's tensor axis, slots and page pool, `rollout.plan`), which the
estimate takes from the compiled report where there is one (TPU targets) and recomputes
identically elsewhere (GPU targets, which nothing here can compile for).

- Rollout phase: `rollout.roofline.simulate_rollout` over `train.prompts_per_step` x samples request
  rows with DeepMath-like response lengths (`roofline.paper_lengths`: log-normal, mean ~3k, 5% at
  the budget); prompts of `prompt_length` tokens.
- `before`: the same estimator on the rollout defaults this project had before the paged cache:
  `slots_for_budget` slots (128 for 8,192 tokens) over the training mesh as it is (decoding copy
  replicated over its batch axes, split over its `tensor`), dense blocked decode attention (every slot
  reads up to the longest row on any chip), no page pool.
- Update, old and reference log-prob passes: FLOPs of the padded batches they compile (rows of
  prompt + budget positions) over the chips' peak: a forward is 2 x weights x tokens + 4 x layers x
  heads x head_dim x (causal pairs); training is 4 forwards (forward, backward = 2, and the remat
  recompute), one per PPO epoch.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from gift_jax.models import ModelConfig
from gift_jax.parallel.chips import CHIPS, Chip, chip_for
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.rollout_settings import needs_base, rollout_sampling
from gift_jax.rollout.layout import decode_param_dtype
from gift_jax.rollout.plan import DecodePlan, default_slots, plan_decode, slots_for_budget
from gift_jax.rollout.roofline import DecodeLayout, DecodeModel, paper_lengths, simulate_rollout, steady_step
from gift_jax.rollout.sizing import kv_bytes_per_position


@dataclasses.dataclass(frozen=True)
class Target:
    """What the estimate needs of a target: its chip, how many, the training mesh's shape on them."""

    chip: Chip
    chips: int
    mesh_tensor: int  # the training mesh's tensor axis
    hbm_bytes: int  # per chip, as the compiler (or the datasheet) gives it


def resident_bytes(config: RLStageConfig, model_config: ModelConfig, chips: int) -> int:
    """Per chip, analytic: the training state (master weights + Adam's two moments in `param_dtype`)
    and the frozen base (when the run loads it), sharded over every chip."""
    n, m = model_config.num_params(), config.model
    stored = jnp.dtype(m.param_dtype).itemsize
    base = n * jnp.dtype(m.base_param_dtype or m.param_dtype).itemsize if needs_base(config) else 0
    return int((3 * n * stored + base) / chips)


def _decode_config(model_config: ModelConfig, config: RLStageConfig) -> ModelConfig:
    m = config.model
    model_config = model_config.replace(dtype=m.dtype, param_dtype=m.param_dtype)
    return model_config.replace(param_dtype=str(decode_param_dtype(model_config)))


def rollout_estimate(
    config: RLStageConfig,
    model_config: ModelConfig,
    target: Target,
    *,
    prompt_length: int = 512,
    plan: DecodePlan | None = None,
    seed: int = 0,
) -> dict:
    """The rollout phase of one RL step, after (the decode plan) and before (the old defaults)."""
    decode_config = _decode_config(model_config, config)
    sampling = rollout_sampling(config)
    budget = config.rollout.max_new_tokens
    rows = config.train.prompts_per_step * sampling.num_samples
    longest = prompt_length - 1 + budget
    if plan is None:
        plan = plan_decode(
            sampling,
            decode_config,
            rows=rows,
            longest_row=longest,
            chips=target.chips,
            mesh_tensor=target.mesh_tensor,
            memory=(target.hbm_bytes - resident_bytes(config, decode_config, target.chips), target.hbm_bytes),
            chip=target.chip,
        )
    model = DecodeModel(decode_config, target.chip)
    lengths = paper_lengths(rows, budget, seed=seed)
    mean_positions = prompt_length + int(lengths.mean())
    groups = target.chips // plan.tensor
    pool = None
    if plan.cache is not None:
        pool = (plan.cache.pages_per_device - 1) * plan.cache.page_size
    after = DecodeLayout(target.chips, plan.tensor, plan.slots // groups, paged=True, pool_positions=pool)
    old_tensor = target.mesh_tensor
    old_groups = target.chips // old_tensor
    old_slots = default_slots(min(slots_for_budget(budget), rows), old_groups) // old_groups
    before = DecodeLayout(target.chips, old_tensor, old_slots, paged=False)
    cache_dtype = sampling.cache_dtype or decode_config.dtype
    report = {}
    for name, layout, positions in (("after", after, mean_positions), ("before", before, longest)):
        step, busy = steady_step(model, layout, rows, positions)
        phase = simulate_rollout(
            model,
            layout,
            prompt_length=prompt_length,
            lengths=lengths,
            samples=sampling.num_samples,
            steps_per_call=sampling.decode_steps_per_call,
            shrink_tail=sampling.shrink_tail,
        )
        held, read = model.weights(layout.tensor)
        decoded = busy * layout.groups  # rows one step decodes, over all chips
        report[name] = {
            "decode_tensor": layout.tensor,
            "slots_per_chip": layout.slots,  # rows a chip decodes at once (its group's)
            "decode_weight_bytes_per_chip": held,
            "decode_weight_read_bytes_per_step": read,
            "kv_bytes_per_token": kv_bytes_per_position(decode_config, cache_dtype, layout.tensor),
            "paged_attention": layout.paged,
            "estimate": {
                "decode_step_s": step.seconds,
                "tokens_per_s_per_chip": decoded / step.seconds / target.chips,
                # The ceiling of this layout: a step that read the weights and nothing else.
                "weights_only_tokens_per_s_per_chip": decoded * target.chip.hbm_bytes_per_s / read / target.chips,
                "bound": step.bound,
                "rollout_phase_s": phase.seconds,
                "phase_tokens_per_s_per_chip": phase.tokens_per_s_per_chip,
                "phase_decode_steps": phase.decode_steps,
                "phase_bounds": phase.bounds,
                "preempted_rows": phase.preempted_rows,
                "steady_state": f"every slot busy at {positions} positions ({busy} rows per group)",
            },
        }
    report["lengths"] = {"rows": rows, "mean": float(lengths.mean()), "at_budget": float((lengths == budget).mean())}
    report["chip"] = dataclasses.asdict(target.chip)
    return report


def update_estimate(
    config: RLStageConfig, model_config: ModelConfig, target: Target, *, prompt_length: int = 512
) -> dict:
    """Seconds of one RL step's log-prob passes and updates (FLOPs over peak; see the module docstring)."""
    c = model_config
    sampling = rollout_sampling(config)
    rows = config.train.prompts_per_step * sampling.num_samples
    length = prompt_length + config.rollout.max_new_tokens - 1
    matmul = c.num_params() - (0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size)  # the lookup is free
    attention = 4 * c.num_layers * c.num_heads * c.head_dim * length * (length + 1) / 2  # causal pairs, per row
    forward = rows * (2 * matmul * length + attention)
    peak = target.chip.peak_bf16_flops * target.chips
    passes = {"old_logprob_s": forward / peak}
    if needs_base(config):
        passes["ref_logprob_s"] = forward / peak
    passes["update_s"] = 4 * forward * config.algo.ppo_epochs / peak
    return {**passes, "flops_per_forward": forward, "padded_tokens": rows * length}


def target_of(topology: str, config: RLStageConfig, devices=None, hbm_bytes: int | None = None) -> Target:
    """The `Target` of a fit-check topology (its devices' chip) or an analytic one (`ANALYTIC_TARGETS`)."""
    if topology in ANALYTIC_TARGETS:
        name, chips = ANALYTIC_TARGETS[topology]
        chip = CHIPS[name]
        hbm_bytes = int(chip.hbm_bytes)
    else:
        chips = len(devices)
        chip = chip_for(devices[0].device_kind)
        if chip is None:
            raise ValueError(f"estimate: no datasheet figures for {devices[0].device_kind!r} (gift_jax.parallel.chips)")
    return Target(chip, chips, config.mesh.resolve(chips)[2], hbm_bytes)


def rl_step_estimate(
    stage: str, config: RLStageConfig, model_config: ModelConfig, target: Target, *, prompt_length: int, plan=None
) -> dict:
    """The `--estimate` block of a rollout or rl report: the rollout phase (after / before), the log-prob
    passes and updates, and one total per RL step for each."""
    rollout = rollout_estimate(config, model_config, target, prompt_length=prompt_length, plan=plan)
    passes = update_estimate(config, model_config, target, prompt_length=prompt_length)
    rest = sum(v for k, v in passes.items() if k.endswith("_s"))
    totals = {name: rollout[name]["estimate"]["rollout_phase_s"] + rest for name in ("after", "before")}
    return {"stage": stage, "rollout": rollout, "passes": passes, "rl_step_s": totals}


ANALYTIC_TARGETS = {"8xh200": ("NVIDIA H200", 8), "8xh100": ("NVIDIA H100", 8)}
