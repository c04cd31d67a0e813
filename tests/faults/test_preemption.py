"""`kill -9` of an init-stage run at a random moment; resuming ends bit-identical to a straight run."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from gift_jax.config_io import load_config
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage
from tests.helpers import init_overrides

REPO = Path(__file__).resolve().parents[2]
EXTRA = {"train.checkpoint_every": 1, "train.eval_every": 100, "train.epochs": 3}  # 9 steps, a save each


def _final_params(workdir):
    steps = sorted(int(p.name) for p in (workdir / "checkpoints" / "periodic").iterdir() if p.name.isdigit())
    return steps[-1], ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / "periodic" / str(steps[-1]) / "state")


def _train_lines(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}") and '"train/loss"' in line)


def test_killed_run_resumes_from_last_complete_checkpoint_bit_identically(tiny_run_inputs, tmp_path):
    overrides = init_overrides(tiny_run_inputs, **EXTRA)
    config = load_config(InitStageConfig, None, overrides)
    run_init_stage(config, tmp_path / "straight")

    rng = random.Random(int(os.environ.get("GIFT_FAULT_SEED", time.time_ns())))
    kill_after_steps, extra_delay = rng.randint(1, 6), rng.uniform(0.0, 0.5)  # often inside a save
    workdir = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "experiments" / "init_stage.py"), "--workdir", str(workdir)]
    cmd += [arg for o in overrides for arg in ("--set", o)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _train_lines(workdir) < kill_after_steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]

    summary = run_init_stage(config, workdir)  # resumes from the newest complete checkpoint
    assert summary["steps"] == 9
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]
    assert any(m["step"] <= kill_after_steps for m in metrics)
    (step_a, params_a), (step_b, params_b) = _final_params(tmp_path / "straight"), _final_params(workdir)
    assert step_a == step_b == 9
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)
