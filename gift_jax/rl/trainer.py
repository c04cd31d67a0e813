"""The on-policy RL loop: prompts -> rollouts (sampler) -> rewards (worker pool) -> advantages ->
PPO-clip updates over mini-batches (jitted, sharded) -> metrics / validation / checkpoints.

The algorithm (`algo.method`: GRPO, LUFFY, ReLIFT) is picked by name from `gift_jax.rl.algorithms`.
A loop step is one RL step; checkpoints carry its number. Resuming restores parameters, optimizer,
step, prompt-stream position and the algorithm's own state; the sampling key of step s is
`fold_in(key(seed), s)`, so a resumed run repeats an uninterrupted one.

Several processes (TPU pod slices, multi-host GPU): every process runs the same loop on the same
host data. All draw the same prompts, the sampler runs sharded over the global mesh and hands every
process all rollouts, process 0 scores them and sends the rewards to the others, and each process places
its own rows of the update batch. Only process 0 writes metrics; all take part in checkpoints.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gift_jax.data import load_tokenizer, read_records
from gift_jax.data.prompt_stream import PromptStream
from gift_jax.evaluation.benchmarks import load_benchmark, read_records as read_benchmark_records
from gift_jax.evaluation.evaluate import EvalConfig, evaluate_problems
from gift_jax.parallel import place_global_batch
from gift_jax.rewards import RewardScorer
from gift_jax.rl.algorithms import ALGORITHMS, RLContext
from gift_jax.rl.config import RLStageConfig, validate_rl_config
from gift_jax.rl.grpo import grpo_advantages
from gift_jax.rl.rollouts import group_outcomes, update_batch
from gift_jax.rl.step import RLStepConfig, rl_train_step, rollout_logprobs
from gift_jax.rollout import SamplingConfig, sample
from gift_jax.runtime.batching import split_minibatches
from gift_jax.runtime.optim import make_optimizer
from gift_jax.runtime.run import StageRun, jit_update, loading_phase, param_shardings
from gift_jax.runtime.train_state import init_train_state


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


def _response_texts(tokenizer, result, is_expert, expert_texts: list[str]) -> list[str]:
    """Decoded completions; an expert row is scored on the expert's full text: one cut at max_new_tokens
    loses its final answer, and a reward of 0 would push the update *away* from the expert trace."""
    texts = [tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(result.completion_ids, result.lengths)]
    if is_expert is None:
        return texts
    expert = iter(expert_texts)
    return [next(expert) if expert_row else text for text, expert_row in zip(texts, is_expert)]


def _rollout_metrics(result, rewards, is_expert, group_size: int) -> dict[str, float]:
    """Reward and length statistics of the on-policy rows."""
    on_policy = ~is_expert if is_expert is not None else np.ones(len(rewards), bool)
    lengths = result.lengths[on_policy]
    return dict(reward_mean=float(rewards[on_policy].mean()), accuracy=float((rewards[on_policy] > 0).mean()),
                response_length_mean=float(lengths.mean()), response_length_max=float(lengths.max()),
                truncated_frac=float(result.truncated[on_policy].mean()), **group_outcomes(rewards, group_size))


class _Timer(dict):
    """`with timer("rollout"): ...` records seconds under `time_rollout_s`."""

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer[f"time_{name}_s"] = time.perf_counter() - self.start

        return _Span()


def run_rl_stage(config: RLStageConfig, workdir: str | Path, *, max_steps: int | None = None) -> dict:
    """Runs (or resumes) the RL stage in `workdir`; returns a summary dict."""
    m, d, r, a, t = config.model, config.data, config.rollout, config.algo, config.train
    algorithm_cls = ALGORITHMS[a.method]
    keys = (d.prompt_key, d.answer_key) + ((d.expert_key,) if algorithm_cls.reads_expert else ())
    with loading_phase():
        sizes = validate_rl_config(config, num_devices=jax.device_count())
        records = read_records(d.train_file, keys)
    total_steps = math.ceil(len(records) * t.epochs / t.prompts_per_step)
    stop_at = min(total_steps, t.max_steps or total_steps, max_steps or total_steps)
    with StageRun(workdir, config, desc=f"rl[{a.method}]", best="max") as run, \
            RewardScorer(num_workers=config.reward.num_workers, timeout_s=config.reward.timeout_s) as scorer:
        tokenizer = load_tokenizer(m.path, m.chat_template)
        stream = PromptStream(records, seed=t.seed)  # the whole batch on every process (module docstring)
        val_problems = _validation_problems(d) if d.val_file else None
        graphdef, params = run.load_policy()
        base_params = run.load_base()[1] if m.base_path and (a.kl_coef or a.track_kl_to_base) else None
        tx = make_optimizer(config.optim, total_steps * sizes.mini_batches * a.ppo_epochs)
        state = init_train_state(params, tx, run.mesh)
        algorithm = algorithm_cls(RLContext(config, tokenizer, run.mesh, graphdef, tx, state, param_shardings(params),
                                            sizes, records))
        step_config = RLStepConfig(algo=a, num_micro=sizes.num_micro, seq_normaliser=float(r.max_new_tokens),
                                   temperature=r.temperature, use_expert=algorithm.expert_rows)
        update_fn = jit_update(functools.partial(rl_train_step, graphdef=graphdef, tx=tx, config=step_config,
                                                 param_shardings=param_shardings(params)), state, run.mesh)
        logprob_fn = jax.jit(functools.partial(rollout_logprobs, graphdef=graphdef, temperature=r.temperature,
                                               chunk_size=a.chunk_size, num_micro=sizes.mini_batches * sizes.num_micro))
        rollout_config = SamplingConfig(max_new_tokens=r.max_new_tokens,
                                        num_samples=algorithm.samples_per_prompt(r.group_size),
                                        temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                        stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id)
        eval_config = EvalConfig(num_samples=t.eval_k, temperature=t.eval_temperature, seed=t.seed,
                                 max_new_tokens=t.eval_max_new_tokens or r.max_new_tokens)
        key = jax.random.key(t.seed)

        state, meta = run.resume(state, stop_at=stop_at)
        if meta:
            stream.set_state(meta["prompt_stream"])
            algorithm.load_state_dict(meta)
        while run.step < stop_at:
            timer, batch_records = _Timer(), stream.next_batch(t.prompts_per_step)
            with timer("rollout"):
                prompts = [tokenizer.encode_prompt(rec[d.prompt_key]) for rec in batch_records]
                result = sample(nnx.merge(graphdef, state.params), prompts, rollout_config,
                                jax.random.fold_in(key, run.step), mesh=run.mesh)
            generated_tokens = int(result.lengths.sum())
            result, is_expert, metrics = algorithm.augment(result, batch_records)
            with timer("reward"):
                responses = _response_texts(tokenizer, result, is_expert, [rec.get(d.expert_key) for rec in batch_records])
                answers = [rec[d.answer_key] for rec in batch_records for _ in range(r.group_size)]
                rewards, timed_out, crashed = _score_once(scorer, responses, answers, config.reward.kind)

            advantages = np.asarray(grpo_advantages(jnp.asarray(rewards), r.group_size, norm_by_std=a.norm_by_std))
            batch = place_global_batch(update_batch(result, advantages, is_expert), run.mesh)
            with timer("update"):
                batch["old_logprobs"], _ = logprob_fn(state.params, batch)  # the training forward: ratio 1 at first
                if base_params is not None:
                    batch["ref_logprobs"], _ = logprob_fn(base_params, batch)
                    on_policy = batch["completion_mask"] * (~batch["is_expert"])[:, None]
                    metrics["kl_to_base"] = jnp.sum((batch["old_logprobs"] - batch["ref_logprobs"]) * on_policy) \
                        / jnp.maximum(jnp.sum(on_policy), 1.0)
                update_metrics = []
                for _ in range(a.ppo_epochs):
                    for minibatch in split_minibatches(batch, sizes.mini_batches):
                        state, out = update_fn(state, minibatch)
                        update_metrics.append(out)
                state, after_metrics = algorithm.after_update(state, batch_records, rewards)
                jax.block_until_ready(state.params)
            run.step += 1
            run.log({**{k: jnp.mean(jnp.stack([u[k] for u in update_metrics])) for k in update_metrics[0]},
                     **metrics},
                    **after_metrics, **_rollout_metrics(result, rewards, is_expert, r.group_size), **timer,
                    reward_timed_out=float(timed_out), reward_crashed=float(crashed),
                    rollout_tokens_per_s=generated_tokens / max(timer["time_rollout_s"], 1e-9),
                    update_tokens_per_s=float(np.sum(result.completion_mask)) * a.ppo_epochs
                    / max(timer["time_update_s"], 1e-9))
            score = None
            if val_problems is not None and (t.eval_every and run.step % t.eval_every == 0 or run.step == stop_at):
                with run.host_work():
                    val = evaluate_problems(nnx.merge(graphdef, state.params), tokenizer, val_problems, eval_config,
                                            scorer, name="validation", mesh=run.mesh, progress=False).metrics()
                run.write(val, prefix="val/")
                score = val[f"avg@{t.eval_k}"]
            periodic = bool(t.checkpoint_every and run.step % t.checkpoint_every == 0) or run.step == stop_at
            run.checkpoint(state, {"prompt_stream": stream.get_state(), **algorithm.state_dict()}, score=score,
                           periodic=periodic)
        return run.finish(state, {f"best_val_avg@{t.eval_k}": run.best_score})
