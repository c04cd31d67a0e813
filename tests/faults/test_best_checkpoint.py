"""A run killed between writing a new best step and the periodic step of the same number resumes to the
same hf_best as an uninterrupted run (the best score comes from the best checkpoint on disk, never from
metadata that announces a save which did not happen); NaN / inf scores are never best."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from gift_jax.config_io import load_config
from gift_jax.runtime import run as run_module
from gift_jax.runtime.checkpoint import Checkpointer
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage
from tests.helpers import init_overrides


class _Killed(BaseException):
    """Stands for kill -9: nothing after it runs, no `except Exception` catches it."""


@pytest.mark.slow  # three short init runs
def test_kill_between_best_and_periodic_save_keeps_hf_best(tiny_run_inputs, tmp_path, monkeypatch):
    overrides = init_overrides(
        tiny_run_inputs, **{"train.eval_every": 1, "train.checkpoint_every": 1, "train.export_hf": True}
    )
    config = load_config(InitStageConfig, None, overrides)
    straight = run_init_stage(config, tmp_path / "straight")

    save = Checkpointer.save

    def dies_after_the_best_step(self, step, state, meta, *, best=False, periodic=True):
        if best and periodic and step >= 3:
            save(self, step, state, meta, best=True, periodic=False)
            raise _Killed
        save(self, step, state, meta, best=best, periodic=periodic)

    monkeypatch.setattr(Checkpointer, "save", dies_after_the_best_step)
    with pytest.raises(_Killed):
        run_init_stage(config, tmp_path / "killed")
    monkeypatch.undo()
    resumed = run_init_stage(config, tmp_path / "killed")
    assert resumed["best_step"] == straight["best_step"]
    assert resumed["best_val_loss"] == straight["best_val_loss"]
    a, b = (
        load_file(str(tmp_path / "straight" / "hf_best" / "model.safetensors")),
        load_file(str(tmp_path / "killed" / "hf_best" / "model.safetensors")),
    )
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_score_is_never_best(score):
    run = object.__new__(run_module.StageRun)  # the rule alone, without a workdir
    run.best = "min"
    run.best_score = None
    assert not run.improves(score)
    run.best_score = 3.0
    assert not run.improves(score) and run.improves(2.0) and not run.improves(None)
