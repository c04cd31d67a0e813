"""Two local processes coordinated by `jax.distributed` (the multi-host code path, on CPU).

Checks per-process data sharding (the two processes together train on the same global batches as one
process with all devices), checkpointing from all processes, and logging from process 0 only.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import init_overrides

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir, overrides, *, devices, process_id=None, num_processes=None, port=None):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    if process_id is not None:
        env.update(GIFT_COORDINATOR=f"localhost:{port}", GIFT_NUM_PROCESSES=str(num_processes),
                   GIFT_PROCESS_ID=str(process_id))
    cmd = [sys.executable, str(REPO / "experiments" / "init_stage.py"), "--workdir", str(workdir)]
    cmd += [arg for o in overrides for arg in ("--set", o)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish_all(procs):
    """Waits for every process, then fails showing each one's output (a peer's error explains a hang)."""
    outputs = [proc.communicate(timeout=420)[0] for proc in procs]
    failed = [f"--- process {i} (exit {p.returncode}) ---\n{out[-3000:]}"
              for i, (p, out) in enumerate(zip(procs, outputs)) if p.returncode != 0]
    assert not failed, "\n".join(failed)


def _val_losses(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line["val/val_loss"] for line in lines if "val/val_loss" in line], lines


def test_two_processes_match_one_process_with_the_same_devices(tiny_run_inputs, tmp_path):
    overrides = init_overrides(tiny_run_inputs, **{"train.epochs": 2, "train.export_hf": True})
    port = _free_port()
    workers = [_launch(tmp_path / "multi", overrides, devices=2, process_id=i, num_processes=2, port=port)
               for i in range(2)]
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
