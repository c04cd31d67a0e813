"""The on-policy RL loop: prompts -> rollouts (sampler) -> rewards (worker pool) -> advantages ->
PPO-clip updates over mini-batches (jitted, sharded) -> metrics / validation / checkpoints.

The algorithm (`algo.method`: GRPO, LUFFY, ReLIFT) is picked by name from `gift_jax.rl.algorithms`.
A loop step is one RL step; checkpoints carry its number. Resuming restores parameters, optimizer,
step, prompt-stream position and the algorithm's own state; the sampling key of step s is
`fold_in(key(seed), s)` (and of its further dynamic-sampling rounds `round_key`), so a resumed run
repeats an uninterrupted one. DAPO's pieces: `reward.overlong_buffer` shapes the reward,
`algo.mask_truncated` drops cut rows from the loss, `algo.dynamic_sampling` refills the step with
groups that carry a signal (`gift_jax.rl.dynamic_sampling`); `algo.rollout_correction` weights the
loss by pi_trainer / pi_rollout, and the mismatch between the two is logged every step.

Several processes (TPU pod slices, multi-host GPU): every process runs the same loop on the same
host data. All draw the same prompts, the sampler runs sharded over the global mesh and hands every
process all rollouts, process 0 scores them and sends the rewards to the others, and each process places
its own rows of the update batch. Only process 0 writes metrics; all take part in checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gift_jax.data import load_tokenizer, read_records
from gift_jax.data.prompt_stream import PromptStream
from gift_jax.data.unknown_tokens import check_record_fields
from gift_jax.evaluation.benchmarks import load_benchmark, read_benchmark_records
from gift_jax.evaluation.evaluate import EvalConfig, evaluate_problems
from gift_jax.parallel import place_global_batch
from gift_jax.rewards import RewardScorer, is_correct
from gift_jax.rl.algorithms import ALGORITHMS, GRPO, RLContext
from gift_jax.rl.config import RLStageConfig, validate_rl_config
from gift_jax.rl.dapo import filter_groups, overlong_penalty
from gift_jax.rl.dynamic_sampling import round_key, sample_step
from gift_jax.rl.grpo import grpo_advantages
from gift_jax.rl.rollout_correction import rollout_mismatch
from gift_jax.rl.rollouts import Rollouts, group_outcomes, update_batch
from gift_jax.rl.step import RLStepConfig, rl_train_step, rollout_logprobs
from gift_jax.rollout import SamplingConfig, run_engine, slots_for_budget
from gift_jax.runtime.batching import split_minibatches
from gift_jax.runtime.optim import make_optimizer
from gift_jax.runtime.run import StageRun, jit_update, loading_phase, param_shardings
from gift_jax.runtime.train_state import init_train_state


def _validation_problems(d) -> list:
    """The validation set: in the RL prompts' own layout (`prompt_key` / `answer_key`) or any benchmark layout."""
    records = read_benchmark_records(d.val_file)
    same_layout = bool(records) and {d.prompt_key, d.answer_key} <= set(records[0])
    fields = dict(problem_field=d.prompt_key, answer_field=d.answer_key) if same_layout else {}
    return load_benchmark(
        d.val_file, name="validation", limit=d.val_limit, math_instruction=d.val_instruction, **fields
    )


def _score_once(
    scorer: RewardScorer, responses: list[str], answers: list[str], kind: str
) -> tuple[np.ndarray, int, int, int]:
    """`([B] float32 rewards, timed-out, crashed, bad-ground-truth counts)`, identical on every process.

    Process 0 scores and sends the result: the per-item time limits are wall-clock, so processes
    scoring on their own could disagree, and with them the advantages and ReLIFT's buffer (whose
    updates are collectives every process must join).
    """
    if jax.process_count() == 1 or jax.process_index() == 0:
        scores = scorer.score(responses, answers, kind=kind)
        counts = [scores.timed_out, scores.crashed, scores.bad_ground_truth]
        payload = np.append(scores.scores, counts).astype(np.float32)
    else:
        payload = np.zeros(len(responses) + 3, np.float32)
    if jax.process_count() > 1:
        payload = np.asarray(multihost_utils.broadcast_one_to_all(payload))
    return payload[:-3], int(payload[-3]), int(payload[-2]), int(payload[-1])


def _response_texts(tokenizer, result, is_expert, expert_texts: list[str]) -> list[str]:
    """Decoded completions; an expert row is scored on the expert's full text: one cut at max_new_tokens
    loses its final answer, and a reward of 0 would push the update *away* from the expert trace."""
    texts = [
        tokenizer.decode(ids[:n], skip_special_tokens=True)
        for ids, n in zip(result.completion_ids, result.lengths, strict=True)
    ]
    if is_expert is None:
        return texts
    expert = iter(expert_texts)
    return [next(expert) if expert_row else text for text, expert_row in zip(texts, is_expert, strict=True)]


def _rollout_metrics(rollouts: Rollouts, group_size: int) -> dict[str, float]:
    """Reward and length statistics of the on-policy rows (accuracy and group outcomes from the answer
    scores, reward_mean from the rewards the advantages use)."""
    result, is_expert, scores = rollouts.result, rollouts.is_expert, rollouts.scores
    on_policy = ~is_expert if is_expert is not None else np.ones(len(scores), bool)
    lengths = result.lengths[on_policy]
    return dict(
        reward_mean=float(rollouts.rewards[on_policy].mean()),
        accuracy=float(is_correct(scores[on_policy]).mean()),
        response_length_mean=float(lengths.mean()),
        response_length_max=float(lengths.max()),
        truncated_frac=float(result.truncated[on_policy].mean()),
        **group_outcomes(scores, group_size),
    )


_SCORING_FAILURES = ("reward_timed_out", "reward_crashed", "reward_bad_ground_truth")


class _Timer(dict):
    """`with timer("rollout"): ...` records seconds under `time_rollout_s`."""

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):  # spans of one name add up (a step's sampling rounds)
                key = f"time_{name}_s"
                timer[key] = timer.get(key, 0.0) + time.perf_counter() - self.start

        return _Span()


@dataclasses.dataclass
class _RLStep:
    """One RL step's pieces, built once per run: rollouts + rewards (host), then the updates (jitted)."""

    config: RLStageConfig
    tokenizer: Any
    algorithm: GRPO
    scorer: RewardScorer
    mesh: Any
    sizes: Any
    graphdef: Any
    base_params: Any  # None: no reference forward (no KL term, no KL-to-base tracking)
    update_fn: Any
    logprob_fn: Any
    mismatch_fn: Any
    sampling: SamplingConfig

    def rollouts(self, params, records: list[dict], step: int, round_index: int, timer: _Timer):
        """One sampling round of `step` -> (`Rollouts` incl. any expert rows, host metrics)."""
        c, tokenizer = self.config, self.tokenizer
        started = time.perf_counter()
        with timer("rollout"):
            prompts = [tokenizer.encode_prompt(rec[c.data.prompt_key]) for rec in records]
            result, engine_stats = run_engine(
                nnx.merge(self.graphdef, params),
                prompts,
                self.sampling,
                round_key(c.train.seed, step, round_index),
                mesh=self.mesh,
            )
        metrics = {
            "rollout_tokens_per_s": int(result.lengths.sum()) / max(time.perf_counter() - started, 1e-9),
            **engine_stats.metrics(),
        }
        result, is_expert, extra = self.algorithm.augment(result, records)
        with timer("reward"):
            responses = _response_texts(tokenizer, result, is_expert, [rec.get(c.data.expert_key) for rec in records])
            answers = [rec[c.data.answer_key] for rec in records for _ in range(c.rollout.group_size)]
            scores, timed_out, crashed, bad_ground_truth = _score_once(self.scorer, responses, answers, c.reward.kind)
        rewards = scores
        if c.reward.overlong_buffer is not None:  # DAPO's soft overlong punishment
            penalty = np.array(
                overlong_penalty(result.lengths, max_len=c.rollout.max_new_tokens, buffer=c.reward.overlong_buffer)
            )
            if is_expert is not None:
                penalty[is_expert] = 0.0  # an expert solution's length is not the policy's doing
            rewards = scores + penalty
            metrics["overlong_penalty_mean"] = float(penalty.mean())
        metrics.update(extra, reward_timed_out=float(timed_out), reward_crashed=float(crashed))
        metrics["reward_bad_ground_truth"] = float(bad_ground_truth)
        return Rollouts(records, result, is_expert, scores, rewards.astype(np.float32)), metrics

    def sample(self, params, stream: PromptStream, step: int, timer: _Timer):
        """The step's sampling rounds (`sample_step`) -> `(trained, trained_groups, sampled, host metrics)`."""
        c = self.config
        metrics = {}

        def sample_round(records: list[dict], round_index: int) -> Rollouts:
            rollouts, round_metrics = self.rollouts(params, records, step, round_index, timer)
            for key in _SCORING_FAILURES:  # counts add up over the rounds; the engine's figures are the last round's
                round_metrics[key] += metrics.get(key, 0.0)
            metrics.update(round_metrics)
            return rollouts

        trained, trained_groups, sampled, sampling_metrics = sample_step(
            sample_round,
            stream,
            prompts=c.train.prompts_per_step,
            group_size=c.rollout.group_size,
            pad_id=self.tokenizer.pad_id,
            dynamic=c.algo.dynamic_sampling,
            max_rounds=c.algo.max_sampling_rounds,
        )
        metrics.update(_rollout_metrics(sampled, c.rollout.group_size), **sampling_metrics)
        return trained, trained_groups, sampled, metrics

    def update(self, state, trained: Rollouts, trained_groups: np.ndarray, sampled: Rollouts, timer: _Timer):
        """PPO updates over the step's mini-batches (rows of `trained`, groups outside `trained_groups`
        and, with `algo.mask_truncated`, truncated rows left out of the loss), then the algorithm's own
        (which sees every `sampled` question). Returns `(state, device metrics, host metrics)`."""
        a, group_size = self.config.algo, self.config.rollout.group_size
        result, is_expert = trained.result, trained.is_expert
        advantages = np.asarray(grpo_advantages(jnp.asarray(trained.rewards), group_size, norm_by_std=a.norm_by_std))
        trained_rows = np.repeat(trained_groups, group_size)
        if a.mask_truncated:  # DAPO's overlong filtering
            trained_rows &= ~result.truncated
        batch = place_global_batch(update_batch(result, advantages, is_expert, trained_rows=trained_rows), self.mesh)
        device_metrics = {}
        with timer("update"):
            batch["old_logprobs"], _ = self.logprob_fn(state.params, batch)  # the training forward: ratio 1 at first
            weights, mismatch = self.mismatch_fn(
                batch["old_logprobs"], batch.pop("rollout_logprobs"), batch["completion_mask"], batch["is_expert"]
            )
            if weights is not None:
                batch["is_weights"] = weights
            device_metrics.update(mismatch)
            if self.base_params is not None:
                batch["ref_logprobs"], _ = self.logprob_fn(self.base_params, batch)
                on_policy = batch["completion_mask"] * (~batch["is_expert"])[:, None]
                device_metrics["kl_to_base"] = jnp.sum(
                    (batch["old_logprobs"] - batch["ref_logprobs"]) * on_policy
                ) / jnp.maximum(jnp.sum(on_policy), 1.0)
            outs = []
            for _ in range(a.ppo_epochs):
                for minibatch in split_minibatches(batch, self.sizes.mini_batches):
                    state, out = self.update_fn(state, minibatch)
                    outs.append(out)
            state, host_metrics = self.algorithm.after_update(state, sampled.records, sampled.scores)
            jax.block_until_ready(state.params)
        device_metrics.update({k: jnp.mean(jnp.stack([out[k] for out in outs])) for k in outs[0]})
        host_metrics["update_tokens_per_s"] = (
            float(np.sum(result.completion_mask)) * a.ppo_epochs / max(timer["time_update_s"], 1e-9)
        )
        # Share of the trained groups whose rewards are all equal (zero advantage): 0 with dynamic sampling.
        without_signal = ~np.asarray(filter_groups(trained.rewards, group_size))[trained_groups]
        host_metrics["update_groups_without_signal_frac"] = float(without_signal.mean()) if without_signal.size else 0.0
        if a.mask_truncated:
            host_metrics["masked_truncated_frac"] = float(
                np.mean(result.truncated & np.repeat(trained_groups, group_size))
            )
        return state, device_metrics, host_metrics


def rl_step_config(config: RLStageConfig, sizes) -> RLStepConfig:
    """The static settings of the GRPO-family update, from the stage config and its derived sizes."""
    a, r = config.algo, config.rollout
    return RLStepConfig(
        algo=a,
        num_micro=sizes.num_micro,
        seq_normaliser=float(r.max_new_tokens),
        temperature=r.temperature,
        use_expert=ALGORITHMS[a.method].expert_rows,
    )


def jit_rl_update(step_config: RLStepConfig, state, mesh, *, graphdef, tx):
    """The RL stage's jitted update `(state, batch) -> (state, metrics)` exactly as the loop runs it;
    `state` may be abstract (the compile-only fit check compiles this same function)."""
    return jit_update(
        functools.partial(
            rl_train_step, graphdef=graphdef, tx=tx, config=step_config, param_shardings=param_shardings(state.params)
        ),
        state,
        mesh,
    )


def _build_step(config: RLStageConfig, run: StageRun, scorer, tokenizer, records, sizes, total_steps: int):
    """Policy, base, optimizer, algorithm and jitted functions -> (initial state, `_RLStep`)."""
    m, r, a = config.model, config.rollout, config.algo
    graphdef, params = run.load_policy()
    base_params = run.load_base()[1] if m.base_path and (a.kl_coef or a.track_kl_to_base) else None
    tx = make_optimizer(config.optim, total_steps * sizes.mini_batches * a.ppo_epochs)
    state = init_train_state(params, tx, run.mesh)
    algorithm = ALGORITHMS[a.method](
        RLContext(config, tokenizer, run.mesh, graphdef, tx, state, param_shardings(params), sizes, records)
    )
    update_fn = jit_rl_update(rl_step_config(config, sizes), state, run.mesh, graphdef=graphdef, tx=tx)
    mismatch_fn = jax.jit(functools.partial(rollout_mismatch, correction=a.rollout_correction))
    logprob_fn = jax.jit(
        functools.partial(
            rollout_logprobs,
            graphdef=graphdef,
            temperature=r.temperature,
            chunk_size=a.chunk_size,
            num_micro=sizes.mini_batches * sizes.num_micro,
        )
    )
    sampling = SamplingConfig(
        max_new_tokens=r.max_new_tokens,
        num_samples=algorithm.samples_per_prompt(r.group_size),
        temperature=r.temperature,
        top_k=r.top_k,
        top_p=r.top_p,
        stop_ids=tokenizer.stop_ids,
        pad_id=tokenizer.pad_id,
        max_concurrent_rows=r.max_concurrent_rows or slots_for_budget(r.max_new_tokens),
        shrink_tail=r.shrink_tail,
    )
    return state, _RLStep(
        config,
        tokenizer,
        algorithm,
        scorer,
        run.mesh,
        sizes,
        graphdef,
        base_params,
        update_fn,
        logprob_fn,
        mismatch_fn,
        sampling,
    )


def run_rl_stage(config: RLStageConfig, workdir: str | Path, *, max_steps: int | None = None) -> dict:
    """Runs (or resumes) the RL stage in `workdir`; returns a summary dict."""
    m, d, r, a, t = config.model, config.data, config.rollout, config.algo, config.train
    keys = (d.prompt_key, d.answer_key) + ((d.expert_key,) if ALGORITHMS[a.method].reads_expert else ())
    with loading_phase():
        sizes = validate_rl_config(config, num_devices=jax.device_count())
        records = read_records(d.train_file, keys, ground_truth_key=d.answer_key, ground_truth_kind=config.reward.kind)
    total_steps = math.ceil(len(records) * t.epochs / t.prompts_per_step)
    stop_at = min(total_steps, t.max_steps or total_steps, max_steps or total_steps)
    with (
        StageRun(workdir, config, desc=f"rl[{a.method}]", best="max") as run,
        RewardScorer(num_workers=config.reward.num_workers, timeout_s=config.reward.timeout_s) as scorer,
    ):
        tokenizer = load_tokenizer(m.path, m.chat_template)
        check_record_fields(
            tokenizer, records, source=str(d.train_file), keys=[k for k in records[0] if k != d.answer_key]
        )
        stream = PromptStream(records, seed=t.seed)  # the whole batch on every process (module docstring)
        val_problems = _validation_problems(d) if d.val_file else None
        eval_config = EvalConfig(
            num_samples=t.eval_k,
            temperature=t.eval_temperature,
            seed=t.seed,
            max_new_tokens=t.eval_max_new_tokens or r.max_new_tokens,
            max_concurrent_rows=r.max_concurrent_rows,
        )
        state, rl_step = _build_step(config, run, scorer, tokenizer, records, sizes, total_steps)
        state, meta = run.resume(state, stop_at=stop_at)
        if meta:
            stream.set_state(meta["prompt_stream"])
            rl_step.algorithm.load_state_dict(meta)
        while run.step < stop_at:
            timer = _Timer()
            trained, trained_groups, sampled, rollout_metrics = rl_step.sample(state.params, stream, run.step, timer)
            state, device_metrics, update_metrics = rl_step.update(state, trained, trained_groups, sampled, timer)
            run.step += 1
            run.log(device_metrics, **rollout_metrics, **update_metrics, **timer)
            score = None
            if val_problems is not None and (t.eval_every and run.step % t.eval_every == 0 or run.step == stop_at):
                with run.host_work():
                    model = nnx.merge(rl_step.graphdef, state.params)
                    val = evaluate_problems(
                        model,
                        tokenizer,
                        val_problems,
                        eval_config,
                        scorer,
                        name="validation",
                        mesh=run.mesh,
                        progress=False,
                    ).metrics()
                run.write(val, prefix="val/")
                score = val[f"avg@{t.eval_k}"]
            periodic = bool(t.checkpoint_every and run.step % t.checkpoint_every == 0) or run.step == stop_at
            run.checkpoint(
                state,
                {"prompt_stream": stream.get_state(), **rl_step.algorithm.state_dict()},
                score=score,
                periodic=periodic,
            )
        return run.finish(state, {f"best_val_avg@{t.eval_k}": run.best_score})
