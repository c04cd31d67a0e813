"""The on-policy RL loop: prompts -> rollouts (sampler) -> rewards (worker pool) -> advantages ->
PPO-clip updates over mini-batches (jitted, sharded) -> metrics / validation / checkpoints.

Methods: plain GRPO (the paper's RL stage), LUFFY (each group gets the expert's solution as an extra,
off-policy member trained with policy shaping) and ReLIFT (questions whose rollouts all fail are
buffered with their expert solution; once `relift_batch` are collected, one SFT update on them is
interleaved with RL). Resuming restores parameters, optimizer, step and prompt-stream position; the
sampling key of step s is `fold_in(key(seed), s)`, so a resumed run repeats an uninterrupted one.

Several processes (TPU pod slices, multi-host GPU): every process runs the same loop on the same
host data. All draw the same prompts, the sampler runs sharded over the global mesh and hands every
process all rollouts, process 0 scores them and sends the rewards to the others, and each process places
its own rows of the update batch. Only process 0 writes metrics; all take part in checkpoints.
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gift_jax.data import build_sft_examples, collate_sft_batch, load_tokenizer, read_records
from gift_jax.data.prompt_stream import PromptStream
from gift_jax.data.unknown_tokens import check_record_fields
from gift_jax.evaluation.benchmarks import load_benchmark, read_benchmark_records
from gift_jax.evaluation.evaluate import EvalConfig, evaluate_problems
from gift_jax.models import load_hf, save_hf
from gift_jax.parallel import make_mesh, place_global_batch
from gift_jax.rewards import RewardScorer
from gift_jax.rl.config import RLStageConfig, validate_rl_config
from gift_jax.rl.grpo import grpo_advantages
from gift_jax.rl.rollouts import completion_arrays, group_outcomes, insert_expert_rows, update_batch
from gift_jax.rl.step import jit_rl_train_step, rl_step_config, rollout_logprobs
from gift_jax.rollout import SamplingConfig, bucket_size, run_engine, slots_for_budget
from gift_jax.train.checkpoint import Checkpointer, CheckpointWriteError
from gift_jax.train.init_step import StepConfig, init_train_state, jit_train_step, split_minibatches
from gift_jax.train.metrics import MetricWriter
from gift_jax.train.optim import make_optimizer
from gift_jax.train.workdir import check_writable, claim_workdir


def _records(config: RLStageConfig) -> list[dict]:
    d = config.data
    keys = (d.prompt_key, d.answer_key) + ((d.expert_key,) if config.algo.method != "grpo" else ())
    return read_records(d.train_file, keys)


def _validation_problems(d) -> list:
    """The validation set: in the RL prompts' own layout (`prompt_key` / `answer_key`) or any benchmark layout."""
    records = read_benchmark_records(d.val_file)
    same_layout = bool(records) and {d.prompt_key, d.answer_key} <= set(records[0])
    fields = dict(problem_field=d.prompt_key, answer_field=d.answer_key) if same_layout else {}
    return load_benchmark(d.val_file, name="validation", limit=d.val_limit, math_instruction=d.val_instruction,
                          **fields)


def _score_once(scorer: RewardScorer, responses: list[str], answers: list[str], kind: str
                ) -> tuple[np.ndarray, int, int]:
    """`([B] float32 rewards, timed-out count, crashed count)`, identical on every process.

    Process 0 scores and sends the result: the per-item time limits are wall-clock, so processes
    scoring on their own could disagree, and with them the advantages and ReLIFT's buffer (whose
    updates are collectives every process must join).
    """
    if jax.process_count() == 1 or jax.process_index() == 0:
        scores = scorer.score(responses, answers, kind=kind)
        payload = np.append(scores.scores, [scores.timed_out, scores.crashed]).astype(np.float32)
    else:
        payload = np.zeros(len(responses) + 2, np.float32)
    if jax.process_count() > 1:
        payload = np.asarray(multihost_utils.broadcast_one_to_all(payload))
    return payload[:-2], int(payload[-2]), int(payload[-1])


def run_rl_stage(config: RLStageConfig, workdir: str | Path, *, max_steps: int | None = None) -> dict:
    """Runs (or resumes) the RL stage in `workdir`; returns a summary dict."""
    workdir = check_writable(workdir)
    sizes = validate_rl_config(config, num_devices=jax.device_count())
    if jax.process_index() == 0:
        claim_workdir(workdir, config)
    m, d, r, a, t = config.model, config.data, config.rollout, config.algo, config.train
    mesh = make_mesh(config.mesh)
    tokenizer = load_tokenizer(m.path, m.chat_template)
    records = _records(config)
    check_record_fields(tokenizer, records, source=str(d.train_file), keys=[k for k in records[0] if k != d.answer_key])
    stream = PromptStream(records, seed=t.seed)  # the whole batch on every process (module docstring)
    total_steps = math.ceil(len(records) * t.epochs / t.prompts_per_step)
    stop_at = min(total_steps, t.max_steps or total_steps, max_steps or total_steps)
    val_problems = _validation_problems(d) if d.val_file else None

    policy, model_config = load_hf(m.path, dtype=m.dtype, param_dtype=m.param_dtype, mesh=mesh, remat=m.remat,
                                   attention=m.attention)
    graphdef, params = nnx.split(policy, nnx.Param)
    base_params = None
    if m.base_path and (a.kl_coef or a.track_kl_to_base):
        base, _ = load_hf(m.base_path, dtype=m.dtype, param_dtype=m.param_dtype, mesh=mesh, attention=m.attention)
        base_params = nnx.split(base, nnx.Param)[1]

    updates_per_step = sizes["mini_batches"] * a.ppo_epochs
    tx = make_optimizer(config.optim, total_steps * updates_per_step)
    step_config = rl_step_config(config, sizes)
    state = init_train_state(params, tx, mesh)
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    update_fn = jit_rl_train_step(state_shardings, mesh, graphdef=graphdef, tx=tx, config=step_config)
    logprob_fn = jax.jit(functools.partial(rollout_logprobs, graphdef=graphdef, temperature=r.temperature,
                                           chunk_size=a.chunk_size,
                                           num_micro=sizes["mini_batches"] * sizes["num_micro"]))
    sft_fn = jit_train_step(state_shardings, mesh, graphdef=graphdef, base_graphdef=graphdef, tx=tx,
                            config=StepConfig("sft", num_micro=sizes["relift_micro"], chunk_size=a.chunk_size))

    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=t.max_to_keep)
    relift_buffer: list[tuple[str, str]] = []
    restored = checkpointer.restore_latest(state)
    step = 0  # RL steps done (state.step also counts ReLIFT's SFT updates)
    if restored is not None:
        _, state, meta = restored
        stream.set_state(meta["prompt_stream"])
        relift_buffer = [tuple(x) for x in meta.get("relift_buffer", [])]
        step = int(meta["step"])
    writer = MetricWriter(workdir, total_steps=stop_at, initial_step=step, log_every=t.log_every,
                          desc=f"rl[{a.method}]")

    relift_max_length = max(len(p) for p in (tokenizer.encode_prompt(rec[d.prompt_key]) for rec in records)) \
        + r.max_new_tokens if a.method == "relift" else 0
    samples_per_prompt = r.group_size - 1 if a.method == "luffy" else r.group_size
    rollout_config = SamplingConfig(max_new_tokens=r.max_new_tokens, num_samples=samples_per_prompt,
                                    temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                    stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id,
                                    max_concurrent_rows=r.max_concurrent_rows or slots_for_budget(r.max_new_tokens))
    eval_config = EvalConfig(num_samples=t.eval_k, temperature=t.eval_temperature, seed=t.seed,
                             max_new_tokens=t.eval_max_new_tokens or r.max_new_tokens,
                             max_concurrent_rows=r.max_concurrent_rows)
    key = jax.random.key(t.seed)
    scorer = RewardScorer(num_workers=config.reward.num_workers, timeout_s=config.reward.timeout_s)

    def validate(model) -> dict[str, float]:
        if val_problems is None:
            return {}
        result = evaluate_problems(model, tokenizer, val_problems, eval_config, scorer, name="validation",
                                   mesh=mesh, progress=False)
        return result.metrics()

    def relift_update(pairs):
        """One SFT update on buffered (question, expert solution) pairs; dropped pairs become padding rows
        (all-zero masks) so the batch keeps its size, and the length is bucketed to limit recompiles."""
        nonlocal state
        examples = list(build_sft_examples(pairs, tokenizer, max_length=relift_max_length))
        if not examples:
            return None
        rows = [(e.token_ids, e.loss_mask) for e in examples] + [None] * (len(pairs) - len(examples))
        width = bucket_size(max(len(e.token_ids) for e in examples) - 1, minimum=64)
        sft_batch = place_global_batch(collate_sft_batch(rows, width, tokenizer.pad_id), mesh)
        state, sft_metrics = sft_fn(state, None, sft_batch)
        return sft_metrics

    try:
        while step < stop_at:
            timings, metrics = {}, {}
            batch_records = stream.next_batch(t.prompts_per_step)
            model = nnx.merge(graphdef, state.params)

            started = time.perf_counter()
            prompts = [tokenizer.encode_prompt(rec[d.prompt_key]) for rec in batch_records]
            result, engine_stats = run_engine(model, prompts, rollout_config, jax.random.fold_in(key, step), mesh=mesh)
            timings["rollout"] = time.perf_counter() - started
            generated_tokens = int(result.lengths.sum())
            is_expert = None
            if a.method == "luffy":
                expert = [tokenizer.encode(rec[d.expert_key]) + [tokenizer.eos_id] for rec in batch_records]
                expert_cut = np.array([len(tokens) > r.max_new_tokens for tokens in expert])
                expert_ids, expert_mask = completion_arrays(expert, r.max_new_tokens, tokenizer.pad_id)
                result, is_expert = insert_expert_rows(result, expert_ids, expert_mask, samples_per_prompt, expert_cut)
                metrics["expert_truncated_frac"] = float(expert_cut.mean())

            started = time.perf_counter()
            responses = [tokenizer.decode(ids[:n], skip_special_tokens=True)
                         for ids, n in zip(result.completion_ids, result.lengths)]
            if is_expert is not None:
                # An expert solution is scored on its full text: one cut at max_new_tokens loses its final
                # answer, and a reward of 0 would push the update *away* from the expert trace.
                expert_texts = iter([rec[d.expert_key] for rec in batch_records])
                responses = [next(expert_texts) if expert_row else text
                             for text, expert_row in zip(responses, is_expert)]
            answers = [rec[d.answer_key] for rec in batch_records for _ in range(r.group_size)]
            rewards, timed_out, crashed = _score_once(scorer, responses, answers, config.reward.kind)
            timings["reward"] = time.perf_counter() - started

            advantages = np.asarray(grpo_advantages(jnp.asarray(rewards), r.group_size, norm_by_std=a.norm_by_std))
            batch = place_global_batch(update_batch(result, advantages, is_expert), mesh)
            started = time.perf_counter()
            batch["old_logprobs"], _ = logprob_fn(state.params, batch)  # the training forward: ratio 1 at first
            if base_params is not None:
                batch["ref_logprobs"], _ = logprob_fn(base_params, batch)
                on_policy = batch["completion_mask"] * (~batch["is_expert"])[:, None]
                metrics["kl_to_base"] = float(jnp.sum((batch["old_logprobs"] - batch["ref_logprobs"]) * on_policy)
                                              / jnp.maximum(jnp.sum(on_policy), 1.0))
            update_metrics = []
            for _ in range(a.ppo_epochs):
                for minibatch in split_minibatches(batch, sizes["mini_batches"]):
                    state, out = update_fn(state, minibatch)
                    update_metrics.append(out)
            if a.method == "relift":
                failed = np.asarray(rewards).reshape(-1, r.group_size).max(axis=1) <= 0
                relift_buffer += [(rec[d.prompt_key], rec[d.expert_key])
                                  for rec, bad in zip(batch_records, failed) if bad]
                if len(relift_buffer) >= a.relift_batch:
                    sft = relift_update(relift_buffer[:a.relift_batch])
                    relift_buffer = relift_buffer[a.relift_batch:]
                    if sft is not None:
                        metrics["relift_sft_nll"] = float(sft["nll"])
            update_metrics = jax.device_get(update_metrics)
            timings["update"] = time.perf_counter() - started
            step += 1

            on_policy_rows = ~is_expert if is_expert is not None else np.ones(len(rewards), bool)
            lengths = result.lengths[on_policy_rows]
            metrics.update({k: float(np.mean([u[k] for u in update_metrics])) for k in update_metrics[0]})
            metrics.update(
                reward_mean=float(rewards[on_policy_rows].mean()), accuracy=float((rewards[on_policy_rows] > 0).mean()),
                response_length_mean=float(lengths.mean()), response_length_max=float(lengths.max()),
                truncated_frac=float(result.truncated[on_policy_rows].mean()),
                reward_timed_out=float(timed_out), reward_crashed=float(crashed),
                **group_outcomes(rewards, r.group_size), **engine_stats.metrics(),
                **{f"time_{k}_s": v for k, v in timings.items()},
                rollout_tokens_per_s=generated_tokens / max(timings["rollout"], 1e-9),
                update_tokens_per_s=float(np.sum(result.completion_mask)) * a.ppo_epochs / max(timings["update"], 1e-9))
            writer.write(step, metrics, prefix="train/")
            if t.eval_every and step % t.eval_every == 0 or step == stop_at:
                val = validate(nnx.merge(graphdef, state.params))
                if val:
                    writer.write(step, val, prefix="val/")
            if step % t.checkpoint_every == 0 or step == stop_at:
                meta = {"prompt_stream": stream.get_state(), "relift_buffer": relift_buffer, "step": step}
                try:
                    checkpointer.save(int(state.step), state, meta)
                except CheckpointWriteError as err:
                    print(f"ERROR: {err}", flush=True)
    finally:
        scorer.close()
        writer.close()

    summary = {"steps": step}
    if t.export_hf:
        out = save_hf(nnx.merge(graphdef, state.params), model_config, workdir / "hf_final", tokenizer_dir=m.path,
                      overwrite=True)
        summary["hf_final"] = str(out)
    checkpointer.close()
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
