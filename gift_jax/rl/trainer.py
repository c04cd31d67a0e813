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
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gift_jax.data import DataFormatError, read_records
from gift_jax.data.prompt_stream import PromptStream
from gift_jax.data.unknown_tokens import check_record_fields
from gift_jax.evaluation.benchmarks import load_benchmark, read_benchmark_records
from gift_jax.evaluation.evaluate import evaluate_problems
from gift_jax.parallel import place_global_batch
from gift_jax.rewards import RewardScorer, is_correct
from gift_jax.rl.algorithms import ALGORITHMS, GRPO, RLContext
from gift_jax.rl.config import RLSizes, RLStageConfig, validate_rl_config
from gift_jax.rl.dapo import filter_groups, overlong_penalty
from gift_jax.rl.dynamic_sampling import round_key, sample_step
from gift_jax.rl.grpo import grpo_advantages
from gift_jax.rl.rollout_correction import rollout_mismatch
from gift_jax.rl.rollout_dump import rollout_rows, validation_rows, write_dump
from gift_jax.rl.rollout_settings import needs_base, rollout_sampling, validation_config
from gift_jax.rl.rollouts import Rollouts, group_outcomes, update_batch
from gift_jax.rl.step import RLStepConfig, rl_train_step, rollout_logprobs
from gift_jax.rollout import RolloutAborted, SamplingConfig, run_engine
from gift_jax.runtime.accumulate import OPTIMIZER_COUNTERS
from gift_jax.runtime.batching import split_minibatches
from gift_jax.runtime.optim import make_optimizer
from gift_jax.runtime.preflight import check_models
from gift_jax.runtime.run import StageRun, jit_update, param_shardings
from gift_jax.runtime.train_state import init_train_state


def _validation_problems(config: RLStageConfig) -> list:
    """The validation set: in the RL prompts' own layout (`prompt_key` / `answer_key`) or any benchmark layout,
    each question followed by the run's instruction, as the RL prompts are (`model.prompt`)."""
    d, instruction = config.data, config.model.prompt.instruction
    records = read_benchmark_records(d.val_file)
    same_layout = bool(records) and {d.prompt_key, d.answer_key} <= set(records[0])
    fields = dict(problem_field=d.prompt_key, answer_field=d.answer_key) if same_layout else {}
    return load_benchmark(
        d.val_file,
        name="validation",
        limit=d.val_limit,
        math_instruction=instruction,
        choice_instruction=instruction or "",
        **fields,
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
    scores, reward_mean from the rewards the advantages use, overlong_penalty_mean their difference)."""
    result, is_expert, scores = rollouts.result, rollouts.is_expert, rollouts.scores
    on_policy = ~is_expert if is_expert is not None else np.ones(len(scores), bool)
    lengths = result.lengths[on_policy]
    return dict(
        reward_mean=float(rollouts.rewards[on_policy].mean()),
        overlong_penalty_mean=float((rollouts.rewards - scores)[on_policy].mean()),
        accuracy=float(is_correct(scores[on_policy]).mean()),
        response_length_mean=float(lengths.mean()),
        response_length_max=float(lengths.max()),
        truncated_frac=float(result.truncated[on_policy].mean()),
        **group_outcomes(scores, group_size),
    )


_SCORING_FAILURES = ("reward_timed_out", "reward_crashed", "reward_bad_ground_truth")


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
    context: int  # the policy's context (max_position_embeddings): prompt + response budget stay inside

    def rollouts(self, params, records: list[dict], run: StageRun, round_index: int = 0):
        """One sampling round of the step -> (`Rollouts` incl. any expert rows, host metrics).

        Raises `RolloutAborted` when the run is asked to stop while sampling (the step is redone on resume)."""
        c, tokenizer = self.config, self.tokenizer
        with run.timed("rollout") as span:
            prompts = [tokenizer.encode_prompt(rec[c.data.prompt_key]) for rec in records]
            budgets = context_budgets(prompts, self.context, c.rollout.max_new_tokens)
            result, engine_stats = run_engine(
                nnx.merge(self.graphdef, params),
                prompts,
                self.sampling,
                round_key(c.train.seed, run.step, round_index),
                mesh=self.mesh,
                budgets=budgets,
                should_stop=run.should_stop,
            )
        metrics = {
            "rollout_tokens_per_s": int(result.lengths.sum()) / max(span.seconds, 1e-9),
            "rollout_budget_cut_by_context": float(sum(b < c.rollout.max_new_tokens for b in budgets)),
            **engine_stats.metrics(),
        }
        result, is_expert, extra = self.algorithm.augment(result, records)
        with run.timed("reward"):
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
        metrics.update(extra, reward_timed_out=float(timed_out), reward_crashed=float(crashed))
        metrics["reward_bad_ground_truth"] = float(bad_ground_truth)
        return Rollouts(records, result, is_expert, scores, rewards.astype(np.float32)), metrics

    def sample(self, params, stream: PromptStream, run: StageRun):
        """The step's sampling rounds (`sample_step`) -> `(trained, trained_groups, sampled, host metrics)`.

        Raises `RolloutAborted` as `rollouts` does."""
        c = self.config
        metrics = {}

        def sample_round(records: list[dict], round_index: int) -> Rollouts:
            rollouts, round_metrics = self.rollouts(params, records, run, round_index)
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

    def update(self, state, trained: Rollouts, trained_groups: np.ndarray, sampled: Rollouts, run: StageRun):
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
        with run.timed("update") as span:
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
        # The optimizer's counters (skipped updates) are the last update's; the rest are means over updates.
        device_metrics.update(
            {
                k: outs[-1][k] if k in OPTIMIZER_COUNTERS else jnp.mean(jnp.stack([out[k] for out in outs]))
                for k in outs[0]
            }
        )
        tokens = float(np.sum(result.completion_mask)) * a.ppo_epochs
        host_metrics["update_tokens_per_s"] = tokens / max(span.seconds, 1e-9)
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
    r, a = config.rollout, config.algo
    graphdef, params = run.load_policy()
    base_params = run.load_base()[1] if needs_base(config) else None
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
    sampling = rollout_sampling(config, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id)
    context = run.model_config.max_position_embeddings
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
        context,
    )


def context_budgets(prompts: list[list[int]], context: int, max_new_tokens: int) -> list[int]:
    """Each prompt's response budget: `max_new_tokens`, cut so prompt + response stay inside `context`."""
    return [max(1, min(max_new_tokens, context - len(prompt))) for prompt in prompts]


def _check_inputs(config: RLStageConfig) -> tuple[RLSizes, list[dict], Any]:
    """Everything that can be checked before the workdir is claimed -> (sizes, RL records, tokenizer)."""
    m, d, a = config.model, config.data, config.algo
    sizes = validate_rl_config(config, num_devices=jax.device_count())
    model_config, tokenizer = check_models(m)
    keys = (d.prompt_key, d.answer_key) + ((d.expert_key,) if ALGORITHMS[a.method].reads_expert else ())
    records = read_records(d.train_file, keys, ground_truth_key=d.answer_key, ground_truth_kind=config.reward.kind)
    # Each question as the user turn of the run's prompt format, the same for rollouts, validation and evaluation.
    records = [{**rec, d.prompt_key: m.prompt.user_message(rec[d.prompt_key])} for rec in records]
    hint = (
        f"Prompts end in model.prompt.instruction={m.prompt.instruction!r} (null: none)" if m.prompt.instruction else ""
    )
    check_record_fields(
        tokenizer,
        records,
        source=str(d.train_file),
        keys=[k for k in keys if k != d.answer_key],
        hints={d.prompt_key: hint},
    )
    context = model_config.max_position_embeddings
    for row, rec in enumerate(records):
        length = len(tokenizer.encode_prompt(rec[d.prompt_key]))
        if length >= context:
            raise DataFormatError(
                f"{d.train_file}: row {row}: field {d.prompt_key!r} is {length} tokens with the chat template, "
                f"which leaves no room for a response in the model's context ({context}, {m.path}/config.json)"
            )
    if d.val_file:
        _validation_problems(config)  # the file's layout and rows
    return sizes, records, tokenizer


def run_rl_stage(
    config: RLStageConfig, workdir: str | Path, *, max_steps: int | None = None, allow_changed_data: bool = False
) -> dict:
    """Runs (or resumes) the RL stage in `workdir`; returns a summary dict.

    `max_steps` stops after that many loop steps in total; `allow_changed_data` resumes although a data
    file changed since the run started (`StageRun`)."""
    r, a, t = config.rollout, config.algo, config.train
    sizes, records, tokenizer = _check_inputs(config)
    total_steps = math.ceil(len(records) * t.epochs / t.prompts_per_step)
    with (
        StageRun(workdir, config, desc=f"rl[{a.method}]", best="max", allow_changed_data=allow_changed_data) as run,
        RewardScorer(num_workers=config.reward.num_workers, timeout_s=config.reward.timeout_s) as scorer,
    ):
        stream = PromptStream(records, seed=t.seed)  # the whole batch on every process (module docstring)
        val_problems = _validation_problems(config) if config.data.val_file else None
        eval_config = validation_config(config)
        state, rl_step = _build_step(config, run, scorer, tokenizer, records, sizes, total_steps)
        dump_settings = dict(
            prompt_key=config.data.prompt_key,
            answer_key=config.data.answer_key,
            group_size=r.group_size,
            norm_by_std=a.norm_by_std,
            max_rows=t.dump_rollouts_rows,
        )
        run.stop_at(total_steps, t.max_steps, max_steps)
        state, meta = run.resume(state)
        if meta:
            stream.set_state(meta["prompt_stream"])
            rl_step.algorithm.load_state_dict(meta)
        while run.running():
            before = {"prompt_stream": stream.get_state(), **rl_step.algorithm.state_dict()}
            try:
                trained, trained_groups, sampled, rollout_metrics = rl_step.sample(state.params, stream, run)
            except RolloutAborted:  # asked to stop while sampling: save the state before this step's prompts
                run.checkpoint(state, before, periodic=True)
                continue
            state, device_metrics, update_metrics = rl_step.update(state, trained, trained_groups, sampled, run)
            run.step += 1
            run.log(device_metrics, **rollout_metrics, **update_metrics)
            dump = t.dump_rollouts_every is not None
            if dump and run.due(t.dump_rollouts_every):
                rows = rollout_rows(
                    run.step,
                    tokenizer,
                    trained.result,
                    trained.rewards,
                    trained.is_expert,
                    trained.records,
                    **dump_settings,
                )
                write_dump(run.workdir, f"step_{run.step:06d}", rows)
            score = None
            if val_problems is not None and run.due(t.eval_every):
                with run.host_work():
                    model = nnx.merge(rl_step.graphdef, state.params)
                    validation = evaluate_problems(
                        model,
                        tokenizer,
                        val_problems,
                        eval_config,
                        scorer,
                        name="validation",
                        mesh=run.mesh,
                        progress=False,
                        keep_responses=dump,
                    )
                    val = validation.metrics()
                    if dump:
                        rows = validation_rows(run.step, validation.samples, max_rows=t.dump_rollouts_rows)
                        write_dump(run.workdir, f"val_step_{run.step:06d}", rows)
                run.write(val, prefix="val/")
                score = val[f"avg@{t.eval_k}"]
            run.checkpoint(
                state,
                {"prompt_stream": stream.get_state(), **rl_step.algorithm.state_dict()},
                score=score,
                periodic=run.due(t.checkpoint_every),
            )
        return run.finish(state, {f"best_val_avg@{t.eval_k}": run.best_score})
