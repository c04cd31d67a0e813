"""Two local processes coordinated by `jax.distributed` (the multi-host code path, on CPU).

Checks, for the init stage and the RL stage, that two processes with 2 devices each train exactly as
one process with 4 devices (per-process data sharding; for RL, rollouts sampled over the global mesh
and gathered to every process), checkpointing from all processes, and logging from process 0 only.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import init_overrides, rl_overrides, write_rl_jsonl

pytestmark = pytest.mark.slow  # three training subprocesses per test

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir, overrides, *, devices, process_id=None, num_processes=None, port=None, script="init_stage.py"):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    if process_id is not None:
        env.update(
            GIFT_COORDINATOR=f"localhost:{port}", GIFT_NUM_PROCESSES=str(num_processes), GIFT_PROCESS_ID=str(process_id)
        )
    cmd = [sys.executable, str(REPO / "experiments" / script), "--workdir", str(workdir)]
    cmd += [arg for o in overrides for arg in ("--set", o)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish_all(procs):
    """Waits for every process, then fails showing each one's output (a peer's error explains a hang)."""
    outputs = [proc.communicate(timeout=420)[0] for proc in procs]
    failed = [
        f"--- process {i} (exit {p.returncode}) ---\n{out[-3000:]}"
        for i, (p, out) in enumerate(zip(procs, outputs))
        if p.returncode != 0
    ]
    assert not failed, "\n".join(failed)


def _val_losses(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line["val/val_loss"] for line in lines if "val/val_loss" in line], lines


def test_two_processes_match_one_process_with_the_same_devices(tiny_run_inputs, tmp_path):
    overrides = init_overrides(tiny_run_inputs, **{"train.epochs": 2, "train.export_hf": True})
    port = _free_port()
    workers = [
        _launch(tmp_path / "multi", overrides, devices=2, process_id=i, num_processes=2, port=port) for i in range(2)
    ]
    single = _launch(tmp_path / "single", overrides, devices=4)
    _finish_all([*workers, single])

    multi_val, multi_lines = _val_losses(tmp_path / "multi")
    single_val, _ = _val_losses(tmp_path / "single")
    steps = [line["step"] for line in multi_lines if "train/loss" in line]
    assert steps == sorted(set(steps)) and len(steps) == 6  # process 0 alone wrote the log
    np.testing.assert_allclose(multi_val, single_val, rtol=1e-4)
    checkpoints = sorted(p.name for p in (tmp_path / "multi" / "checkpoints" / "periodic").iterdir())
    assert checkpoints == ["3", "6"]
    assert (tmp_path / "multi" / "hf_best" / "model.safetensors").exists()


def test_rl_on_two_processes_matches_one_process_with_the_same_devices(tiny_run_inputs, tmp_path):
    # ReLIFT (its SFT updates on buffered all-fail questions are collectives every process must join),
    # with the base as reference (KL tracking) and a validation pass at the end.
    prompts = write_rl_jsonl(tmp_path / "rl.jsonl", 32)
    overrides = rl_overrides(
        tiny_run_inputs["model"],
        prompts,
        **{
            "algo.method": "relift",
            "algo.relift_batch": 8,
            "model.base_path": tiny_run_inputs["model"],
            "data.val_file": write_rl_jsonl(tmp_path / "val.jsonl", 8, seed=1),
            "train.eval_k": 2,
            "train.max_steps": 3,
            "train.checkpoint_every": 3,
            "train.export_hf": True,
        },
    )
    port = _free_port()
    workers = [
        _launch(
            tmp_path / "multi", overrides, devices=2, process_id=i, num_processes=2, port=port, script="rl_stage.py"
        )
        for i in range(2)
    ]
    single = _launch(tmp_path / "single", overrides, devices=4, script="rl_stage.py")
    _finish_all([*workers, single])

    def logged(workdir):
        lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [line for line in lines if "train/loss" in line]

    multi, one = logged(tmp_path / "multi"), logged(tmp_path / "single")
    assert [line["step"] for line in multi] == [1, 2, 3]  # process 0 alone wrote the log
    for key in ("train/reward_mean", "train/response_length_mean", "train/loss", "train/grad_norm", "train/kl_to_base"):
        np.testing.assert_allclose([line[key] for line in multi], [line[key] for line in one], rtol=1e-4, atol=1e-7)
    assert any("train/relift_sft_nll" in line for line in multi)  # an interleaved SFT update ran
    steps = sorted(int(p.name) for p in (tmp_path / "multi" / "checkpoints" / "periodic").iterdir())
    assert steps == sorted(int(p.name) for p in (tmp_path / "single" / "checkpoints" / "periodic").iterdir())
    assert (tmp_path / "multi" / "hf_final" / "model.safetensors").exists()
    val = [json.loads(line) for line in (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()]
    assert any("val/avg@2" in line for line in val)


def test_sigterm_to_one_process_stops_both_at_the_same_checkpointed_step(tiny_run_inputs, tmp_path):
    # The preemption notice reaches one host; JAX's preemption sync point has every process stop after the
    # same loop step, and each takes part in saving it (a save of different steps would hang).
    overrides = init_overrides(tiny_run_inputs, **{"train.epochs": 6, "train.checkpoint_every": 100})
    port = _free_port()
    workers = [
        _launch(tmp_path / "multi", overrides, devices=2, process_id=i, num_processes=2, port=port) for i in range(2)
    ]
    metrics, deadline = tmp_path / "multi" / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and metrics.read_text().count('"train/loss"') >= 2) and time.time() < deadline:
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=300)[0] for proc in workers]
    assert [proc.returncode for proc in workers] == [75, 75], "\n".join(out[-2000:] for out in outputs)
    steps = sorted(p.name for p in (tmp_path / "multi" / "checkpoints" / "periodic").iterdir())
    assert len(steps) == 1 and int(steps[0]) < 18  # one step, saved by both, before the end
    for out in outputs:
        assert f"stopped at loop step {steps[0]} of 18" in out.strip().splitlines()[-1]
