"""The initialization-stage loop: data -> jitted step -> metrics / validation / checkpoints -> HF export.

Resuming from `workdir` restores parameters, optimizer state, step and the data-iterator position,
so a run that is stopped and resumed ends bit-identical to an uninterrupted one (CPU, float32).
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
from jax.experimental import multihost_utils
from flax import nnx

from gift_jax.data import make_eval_batches, make_sft_iterator, prepare_tfds
from gift_jax.models import load_hf, save_hf
from gift_jax.parallel import make_mesh, replicated, shard_batch
from gift_jax.train.checkpoint import Checkpointer, CheckpointWriteError
from gift_jax.train.workdir import check_writable, claim_workdir
from gift_jax.train.init_config import InitStageConfig, init_step_config, validate_init_config
from gift_jax.train.init_step import (
    eval_step, init_train_state, jit_train_step, policy_logprobs, split_minibatches,
)
from gift_jax.train.metrics import LaggedTrainMetrics, MetricWriter
from gift_jax.train.optim import make_optimizer


def _data_splits(config: InitStageConfig, workdir: Path):
    files = {"train": config.data.train_file}
    if config.data.val_file:
        files["validation"] = config.data.val_file
    d = config.data
    prepare = functools.partial(prepare_tfds, files, model_dir=config.model.path, data_dir=workdir / "data",
                                chat_template=d.chat_template, prompt_key=d.prompt_key, response_key=d.response_key,
                                max_length=d.max_length, truncation=d.truncation)
    # One writer: process 0 tokenizes into the shared workdir, the others then open the finished dataset.
    if jax.process_index() == 0:
        prepared = prepare()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("init_stage_data_prepared")
    if jax.process_index() != 0:
        prepared = prepare()
    val = prepared.split("validation") if config.data.val_file else None
    return prepared, prepared.split("train"), val


def run_init_stage(config: InitStageConfig, workdir: str | Path, *, max_steps: int | None = None) -> dict:
    """Trains the init stage in `workdir` (resuming if it holds checkpoints); returns a summary dict.

    `max_steps` stops after that many updates in total (also counting a resumed run's earlier ones).
    """
    workdir = check_writable(workdir)
    sizes = validate_init_config(config, num_devices=jax.device_count(), process_count=jax.process_count())
    if jax.process_index() == 0:
        claim_workdir(workdir, config)
    t, mc = config.train, config.model
    mesh = make_mesh(config.mesh)
    prepared, train_split, val_split = _data_splits(config, workdir)

    policy, model_config = load_hf(mc.path, dtype=mc.dtype, param_dtype=mc.param_dtype, mesh=mesh, remat=mc.remat,
                                   attention=mc.attention)
    graphdef, params = nnx.split(policy, nnx.Param)
    step_config = init_step_config(config, sizes)
    base_graphdef, base_params = graphdef, None
    if step_config.needs_reference:
        base, _ = load_hf(mc.path, dtype=mc.dtype, param_dtype=mc.base_param_dtype or mc.param_dtype, mesh=mesh,
                          attention=mc.attention)
        base_graphdef, base_params = nnx.split(base, nnx.Param)

    iterator = make_sft_iterator(
        train_split, batch_size=sizes["local_batch"], seed=t.seed, num_epochs=t.epochs,
        process_index=jax.process_index(), process_count=jax.process_count(),
        bucket_lengths=config.data.bucket_lengths or None, num_threads=config.data.num_threads,
        pack=config.data.pack)
    updates_per_batch = config.loss.psft_minibatches if step_config.needs_old_logprobs else 1
    total_steps = iterator.num_batches * updates_per_batch
    stop_at = min(total_steps, t.max_steps or total_steps, max_steps or total_steps)
    tx = make_optimizer(config.optim, total_steps)

    state = init_train_state(params, tx, mesh)
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    step_fn = jit_train_step(state_shardings, mesh, graphdef=graphdef, base_graphdef=base_graphdef, tx=tx,
                             config=step_config)
    no_grad = dict(graphdef=graphdef, chunk_size=config.loss.chunk_size, num_micro=sizes["forward_micro"])
    eval_fn = jax.jit(functools.partial(eval_step, **no_grad), out_shardings=replicated(mesh))
    old_logprobs_fn = jax.jit(functools.partial(policy_logprobs, **no_grad))

    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=t.max_to_keep)
    best_val = math.inf
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        _, state, meta = restored
        iterator.set_state(meta["data_iterator"])
        best_val = meta.get("best_val_loss", math.inf)
    step = int(state.step)
    writer = MetricWriter(workdir, total_steps=stop_at, initial_step=step, log_every=t.log_every,
                          desc=f"init[{config.loss.name}]")
    if step == 0:
        writer.write(step, {f"{split}/{k}": v for split, stats in prepared.stats.items() for k, v in stats.items()},
                     prefix="data/")

    steps_per_epoch = iterator.steps_per_epoch * updates_per_batch
    eval_every = t.eval_every or steps_per_epoch
    checkpoint_every = t.checkpoint_every or steps_per_epoch

    def validate() -> float | None:
        if val_split is None:
            return None
        sums = {"nll": 0.0, "tokens": 0.0}
        for batch in make_eval_batches(val_split, batch_size=sizes["local_batch"], process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       bucket_lengths=config.data.bucket_lengths or None, num_threads=0,
                                       pack=config.data.pack):
            out = eval_fn(state.params, shard_batch(batch, mesh))
            sums = {k: sums[k] + float(out[k]) for k in sums}
        return sums["nll"] / max(sums["tokens"], 1.0)

    def checkpoint(val_loss: float | None) -> None:
        nonlocal best_val
        is_best = val_loss is not None and val_loss < best_val
        if is_best:
            best_val = val_loss
        meta = {"data_iterator": iterator.get_state(), "best_val_loss": best_val, "val_loss": val_loss,
                "step": step}
        try:
            checkpointer.save(step, state, meta, best=is_best)
        except CheckpointWriteError as err:  # keep training; the previous checkpoint stays usable
            writer.write(step, {"checkpoint_write_failed": 1.0}, prefix="error/")
            print(f"ERROR: {err}", flush=True)

    last_val_loss = None
    pending: list[dict] = []  # PSFT: mini-batches of the current global batch still to apply
    train_log = LaggedTrainMetrics(writer)
    while step < stop_at:
        if not pending:
            batch = shard_batch(next(iterator), mesh)
            if step_config.needs_old_logprobs:
                batch["old_logprobs"] = old_logprobs_fn(state.params, batch)
                pending = split_minibatches(batch, updates_per_batch)
            else:
                pending = [batch]
        state, metrics = step_fn(state, base_params, pending.pop(0))
        step += 1
        train_log.push(step, metrics, epoch=step / steps_per_epoch)  # logs the previous step meanwhile
        val_loss = None
        if step % eval_every == 0 or step == stop_at:
            train_log.flush()
            val_loss = last_val_loss = validate()
            train_log.restart_clock()
            if val_loss is not None:
                writer.write(step, {"val_loss": val_loss}, prefix="val/")
        improved = val_loss is not None and val_loss < best_val  # hf_best must see every improvement
        if not pending and (step % checkpoint_every == 0 or step == stop_at or improved):
            train_log.flush()
            checkpoint(val_loss)
            train_log.restart_clock()
    train_log.flush()
    writer.close()

    summary = {"steps": step, "best_val_loss": best_val, "final_val_loss": last_val_loss}
    if t.export_hf:
        tokenizer_dir = mc.path
        export = lambda params_, name: save_hf(nnx.merge(graphdef, params_), model_config, workdir / name,
                                               tokenizer_dir=tokenizer_dir, overwrite=True)
        summary["hf_final"] = str(export(state.params, "hf_final"))
        best_step = checkpointer.best_step()
        if best_step is not None:
            best_state, _ = checkpointer.restore(best_step, state, kind="best")
            summary["hf_best"] = str(export(best_state.params, "hf_best"))
            summary["best_step"] = best_step
    checkpointer.close()
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


