"""The metric writer: one line per step in metrics.jsonl, also across a resume."""

import json

from gift_jax.runtime.metrics import MetricWriter


def test_resumed_run_sets_aside_the_lines_of_steps_it_redoes(tmp_path):
    writer = MetricWriter(tmp_path, total_steps=10)
    for step in range(1, 6):
        writer.write(step, {"loss": float(step)}, prefix="train/")
    writer.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "train/lo')  # a line cut by a kill

    resumed = MetricWriter(tmp_path, total_steps=10, initial_step=3)  # the checkpoint was at step 3
    for step in range(4, 7):
        resumed.write(step, {"loss": 10.0 + step}, prefix="train/")
    resumed.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert [line["train/loss"] for line in lines[3:]] == [14.0, 15.0, 16.0]
    aside = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()  # nothing lost
    assert [json.loads(line)["step"] for line in aside[:2]] == [4, 5] and aside[2] == '{"step": 6, "train/lo'


def test_lagged_train_metrics_log_each_step_once_after_the_next_is_dispatched(tmp_path):
    import jax.numpy as jnp

    from gift_jax.runtime.metrics import LaggedTrainMetrics

    writer = MetricWriter(tmp_path, total_steps=3)
    lagged = LaggedTrainMetrics(writer)

    def logged_steps():
        return [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]

    lagged.push(1, {"loss": jnp.float32(1.0), "tokens": jnp.float32(64.0)}, epoch=0.5)
    assert logged_steps() == []  # still on the device's side
    lagged.push(2, {"loss": jnp.float32(2.0), "tokens": jnp.float32(64.0)}, epoch=1.0)
    assert logged_steps() == [1]
    lagged.flush()
    lagged.flush()  # nothing left: no second line
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert [line["train/epoch"] for line in lines] == [0.5, 1.0]
    assert all(line["train/tokens_per_s"] > 0 for line in lines)
