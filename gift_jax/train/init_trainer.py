"""The initialization-stage loop: data -> jitted step -> metrics / validation / checkpoints -> HF export.

A loop step is one optimizer update (PSFT takes `loss.psft_minibatches` of them per global batch).
Resuming from `workdir` restores parameters, optimizer state, step and the data-iterator position,
so a run that is stopped and resumed ends bit-identical to an uninterrupted one (CPU, float32).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
from jax.experimental import multihost_utils

from gift_jax.data import make_eval_batches, make_sft_iterator, prepare_tfds, read_records
from gift_jax.errors import storage_error
from gift_jax.parallel import replicated, shard_batch
from gift_jax.runtime.batching import split_minibatches
from gift_jax.runtime.demonstrations import (
    DemonstrationStepConfig,
    demonstration_step,
    eval_step,
    policy_logprobs,
)
from gift_jax.runtime.optim import make_optimizer
from gift_jax.runtime.preflight import check_models
from gift_jax.runtime.run import StageRun, jit_update, param_shardings
from gift_jax.runtime.train_state import init_train_state
from gift_jax.train.init_config import InitSizes, InitStageConfig, validate_init_config


def _data_splits(config: InitStageConfig, workdir: Path):
    files = {"train": config.data.train_file}
    if config.data.val_file:
        files["validation"] = config.data.val_file
    d = config.data
    prepare = functools.partial(
        prepare_tfds,
        files,
        model_dir=config.model.path,
        data_dir=workdir / "data",
        chat_template=config.model.chat_template,
        prompt_key=d.prompt_key,
        response_key=d.response_key,
        max_length=d.max_length,
        truncation=d.truncation,
        prompt_format=config.model.prompt,
    )
    # One writer: process 0 tokenizes into the shared workdir, the others then open the finished dataset.
    if jax.process_index() == 0:
        try:
            prepared = prepare()
        except OSError as err:  # a full disk while the dataset is written: one line, not a TFDS traceback
            raise storage_error(str(workdir / "data"), err) from err
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("init_stage_data_prepared")
    if jax.process_index() != 0:
        prepared = prepare()
    val = prepared.split("validation") if config.data.val_file else None
    return prepared, prepared.split("train"), val


def _validation_loss(eval_fn, params, val_split, config: InitStageConfig, sizes: InitSizes, mesh) -> float | None:
    """Held-out NLL per supervised token over the whole validation split (None without one)."""
    if val_split is None:
        return None
    sums = {"nll": 0.0, "tokens": 0.0}
    for batch in make_eval_batches(
        val_split,
        batch_size=sizes.local_batch,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        bucket_lengths=config.data.bucket_lengths or None,
        num_threads=0,
        pack=config.data.pack,
    ):
        out = eval_fn(params, shard_batch(batch, mesh))
        sums = {k: sums[k] + float(out[k]) for k in sums}
    return sums["nll"] / max(sums["tokens"], 1.0)


def init_step_config(config: InitStageConfig, sizes: InitSizes) -> DemonstrationStepConfig:
    """The static settings of the init stage's update, from its config and derived sizes."""
    loss = config.loss
    return DemonstrationStepConfig(
        name=loss.name, hparams=loss.hparams(), chunk_size=loss.chunk_size, num_micro=sizes.num_micro
    )


def jit_init_update(step_config: DemonstrationStepConfig, state, mesh, *, graphdef, base_graphdef, tx):
    """The init stage's jitted update `(state, base_params, batch) -> (state, metrics)` exactly as the
    loop runs it; `state` may be abstract (the compile-only fit check compiles this same function)."""
    step = functools.partial(
        demonstration_step,
        graphdef=graphdef,
        base_graphdef=base_graphdef,
        tx=tx,
        config=step_config,
        param_shardings=param_shardings(state.params),
    )
    return jit_update(step, state, mesh, num_inputs=2)


def _check_inputs(config: InitStageConfig) -> InitSizes:
    """Everything that can be checked before the workdir is claimed: sizes, model folders, tokenizer, data files."""
    sizes = validate_init_config(config, num_devices=jax.device_count(), process_count=jax.process_count())
    check_models(config.model)
    d = config.data
    for path in (d.train_file, d.val_file):
        if path is not None:
            read_records(path, [d.prompt_key, d.response_key])  # columns, types, UTF-8: errors name the row
    return sizes


def run_init_stage(
    config: InitStageConfig, workdir: str | Path, *, max_steps: int | None = None, allow_changed_data: bool = False
) -> dict:
    """Trains the init stage in `workdir` (resuming if it holds checkpoints); returns a summary dict.

    `max_steps` stops after that many loop steps in total (also counting a resumed run's earlier ones).
    `allow_changed_data` resumes although a data file changed since the run started (`StageRun`).
    """
    sizes = _check_inputs(config)
    t, loss = config.train, config.loss
    with StageRun(workdir, config, desc=f"init[{loss.name}]", best="min", allow_changed_data=allow_changed_data) as run:
        prepared, train_split, val_split = _data_splits(config, run.workdir)
        graphdef, params = run.load_policy()
        step_config = init_step_config(config, sizes)
        base_graphdef, base_params = run.load_base() if step_config.needs_reference else (graphdef, None)
        iterator = make_sft_iterator(
            train_split,
            batch_size=sizes.local_batch,
            seed=t.seed,
            num_epochs=t.epochs,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            bucket_lengths=config.data.bucket_lengths or None,
            num_threads=config.data.num_threads,
            pack=config.data.pack,
        )
        total_steps = iterator.num_batches * loss.updates_per_batch
        run.stop_at(total_steps, t.max_steps, max_steps)
        tx = make_optimizer(config.optim, total_steps)
        state = init_train_state(params, tx, run.mesh)
        step_fn = jit_init_update(step_config, state, run.mesh, graphdef=graphdef, base_graphdef=base_graphdef, tx=tx)
        no_grad = dict(graphdef=graphdef, chunk_size=loss.chunk_size, num_micro=sizes.forward_micro)
        eval_fn = jax.jit(functools.partial(eval_step, **no_grad), out_shardings=replicated(run.mesh))
        old_logprobs_fn = jax.jit(functools.partial(policy_logprobs, **no_grad))

        state, meta = run.resume(state)
        if meta:
            iterator.set_state(meta["data_iterator"])
        else:
            run.write(
                {f"{split}/{k}": v for split, stats in prepared.stats.items() for k, v in stats.items()}, prefix="data/"
            )
        steps_per_epoch = iterator.steps_per_epoch * loss.updates_per_batch
        eval_every, checkpoint_every = t.eval_every or steps_per_epoch, t.checkpoint_every or steps_per_epoch
        val_loss = None
        pending: list[dict] = []  # PSFT: mini-batches of the current global batch still to apply
        while run.running():
            if not pending:
                batch = shard_batch(next(iterator), run.mesh)
                if step_config.needs_old_logprobs:
                    batch["old_logprobs"] = old_logprobs_fn(state.params, batch)
                pending = split_minibatches(batch, loss.updates_per_batch)
            state, metrics = step_fn(state, base_params, pending.pop(0))
            run.step += 1
            run.log(metrics, epoch=run.step / steps_per_epoch)  # logs the previous step meanwhile
            score = None
            if run.due(eval_every):
                with run.host_work():
                    score = val_loss = _validation_loss(eval_fn, state.params, val_split, config, sizes, run.mesh)
                if score is not None:
                    run.write({"val_loss": score}, prefix="val/")
            # Only a whole global batch has a data position to resume from; an improvement inside one
            # is still saved as the best checkpoint (hf_best).
            run.checkpoint(
                state,
                {"data_iterator": iterator.get_state(), "val_loss": score},
                score=score,
                periodic=run.due(checkpoint_every),
                resumable=not pending,
            )
        return run.finish(state, {"best_val_loss": run.best_score, "final_val_loss": val_loss})
