"""SIGTERM / SIGINT (a preemption notice, a scheduler, Ctrl-C) at a random moment of an init and an RL run:
the current loop step finishes (an RL rollout phase may be abandoned), is checkpointed, the process exits
with status 75, and the resumed run ends bit-identical to an uninterrupted one."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from gift_jax.config_io import load_config
from gift_jax.errors import RunStopped
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.trainer import run_rl_stage
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage
from tests.faults.test_preemption import _assert_same_final_params, _train_lines
from tests.helpers import init_overrides, rl_overrides, write_rl_jsonl

pytestmark = pytest.mark.slow  # subprocess runs, signalled, then resumed

REPO = Path(__file__).resolve().parents[2]
# No periodic checkpoint before the end: whatever is saved at the signal was saved because of it.
NO_PERIODIC = {"train.checkpoint_every": 100, "train.eval_every": 100, "train.export_hf": True}


def _assert_same_export(straight: Path, resumed: Path):
    a, b = (load_file(str(folder / "hf_final" / "model.safetensors")) for folder in (straight, resumed))
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _signal_at_random_moment(script: str, overrides: list[str], workdir: Path, signum: int, max_steps: int):
    """Starts `experiments/<script>`, sends `signum` after a random number of logged steps plus a random
    delay (GIFT_FAULT_SEED fixes the moment); returns (steps logged when signalled, exit status, stderr)."""
    rng = random.Random(int(os.environ.get("GIFT_FAULT_SEED", time.time_ns())))
    after_steps, extra_delay = rng.randint(1, max_steps - 2), rng.uniform(0.0, 0.3)
    cmd = [sys.executable, str(REPO / "experiments" / script), "--workdir", str(workdir)]
    cmd += [arg for o in overrides for arg in ("--set", o)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while _train_lines(workdir) < after_steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(extra_delay)
    logged = _train_lines(workdir)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=240)
    return logged, proc.returncode, stderr


def _periodic_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints" / "periodic").iterdir() if p.name.isdigit())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signalled_init_run_checkpoints_its_step_and_resumes_bit_identically(tiny_run_inputs, tmp_path, signum):
    overrides = init_overrides(tiny_run_inputs, **NO_PERIODIC, **{"train.epochs": 3})  # 9 steps
    config = load_config(InitStageConfig, None, overrides)
    run_init_stage(config, tmp_path / "straight")
    logged, status, stderr = _signal_at_random_moment("init_stage.py", overrides, tmp_path / "stopped", signum, 9)
    assert status == RunStopped.exit_status, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: ") and "run the same command again to resume" in last
    (saved,) = _periodic_steps(tmp_path / "stopped")  # the stop's checkpoint, and no other
    assert saved >= logged  # nothing already logged is redone
    assert _train_lines(tmp_path / "stopped") == saved  # every finished step logged, once
    assert run_init_stage(config, tmp_path / "stopped")["steps"] == 9
    _assert_same_final_params(tmp_path / "straight", tmp_path / "stopped", 9)
    _assert_same_export(tmp_path / "straight", tmp_path / "stopped")


def test_sigterm_during_an_rl_run_redoes_at_most_one_step(tiny_run_inputs, tmp_path, capsys):
    prompts = write_rl_jsonl(tmp_path / "rl.jsonl", 64)
    extra = {"algo.method": "luffy", "train.max_steps": 6, "rollout.max_new_tokens": 24, **NO_PERIODIC}
    overrides = rl_overrides(tiny_run_inputs["model"], prompts, **extra)
    config = load_config(RLStageConfig, None, overrides)
    run_rl_stage(config, tmp_path / "straight")
    logged, status, stderr = _signal_at_random_moment("rl_stage.py", overrides, tmp_path / "stopped", signal.SIGTERM, 6)
    assert status == RunStopped.exit_status, stderr[-3000:]
    (saved,) = _periodic_steps(tmp_path / "stopped")
    assert saved >= logged  # the step in progress (its rollouts, if they were abandoned) is all that is redone
    capsys.readouterr()
    assert run_rl_stage(config, tmp_path / "stopped")["steps"] == 6
    assert f"resumed from loop step {saved} of 6: " in capsys.readouterr().out
    _assert_same_final_params(tmp_path / "straight", tmp_path / "stopped", 6)
    _assert_same_export(tmp_path / "straight", tmp_path / "stopped")
