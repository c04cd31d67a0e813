"""`kill -9` of an init-stage run and of an RL run at a random moment (often inside a checkpoint save);
resuming continues from the last complete checkpoint and ends bit-identical to a straight run."""

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
import pytest

from gift_jax.config_io import load_config
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.trainer import run_rl_stage
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage
from tests.helpers import init_overrides, rl_overrides, write_rl_jsonl

pytestmark = pytest.mark.slow  # kill -9 of subprocess runs, then resumed runs

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


def _kill_at_random_moment(script: str, overrides: list[str], workdir: Path, max_steps: int) -> int:
    """Starts `experiments/<script>`, SIGKILLs it after a random number of logged steps plus a random
    delay; returns that step count. GIFT_FAULT_SEED fixes the moment (otherwise it varies per run)."""
    rng = random.Random(int(os.environ.get("GIFT_FAULT_SEED", time.time_ns())))
    kill_after_steps, extra_delay = rng.randint(1, max_steps - 2), rng.uniform(0.0, 0.5)
    cmd = [sys.executable, str(REPO / "experiments" / script), "--workdir", str(workdir)]
    cmd += [arg for o in overrides for arg in ("--set", o)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _train_lines(workdir) < kill_after_steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    return kill_after_steps


def _assert_same_final_params(straight: Path, resumed: Path, steps: int):
    (step_a, params_a), (step_b, params_b) = _final_params(straight), _final_params(resumed)
    assert step_a == step_b == steps
    leaves_a, leaves_b = jax.tree.leaves(params_a), jax.tree.leaves(params_b)
    assert len(leaves_a) == len(leaves_b) > 0
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(a, b)


def test_killed_init_run_resumes_bit_identically(tiny_run_inputs, tmp_path):
    overrides = init_overrides(tiny_run_inputs, **EXTRA)
    config = load_config(InitStageConfig, None, overrides)
    run_init_stage(config, tmp_path / "straight")
    killed_after = _kill_at_random_moment("init_stage.py", overrides, tmp_path / "killed", 9)
    summary = run_init_stage(config, tmp_path / "killed")  # resumes from the newest complete checkpoint
    assert summary["steps"] == 9
    metrics = [
        json.loads(line)
        for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
        if line.endswith("}")
    ]
    assert any(m["step"] <= killed_after for m in metrics)
    _assert_same_final_params(tmp_path / "straight", tmp_path / "killed", 9)


def test_killed_rl_run_resumes_identically(tiny_run_inputs, tmp_path):
    # LUFFY: the expert member of each group earns reward 1, so every update really moves the weights.
    prompts = write_rl_jsonl(tmp_path / "rl.jsonl", 64)
    overrides = rl_overrides(tiny_run_inputs["model"], prompts, **{"algo.method": "luffy", "train.max_steps": 6})
    config = load_config(RLStageConfig, None, overrides)
    run_rl_stage(config, tmp_path / "straight")
    _kill_at_random_moment("rl_stage.py", overrides, tmp_path / "killed", 6)
    assert run_rl_stage(config, tmp_path / "killed")["steps"] == 6
    _assert_same_final_params(tmp_path / "straight", tmp_path / "killed", 6)  # checkpoints carry RL step numbers
