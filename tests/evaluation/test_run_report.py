"""The report over real runs: workdirs and evaluation outputs written by the stages' own writers, linked by path."""

import json

import numpy as np
import pytest

from experiments.report import main as report_main
from gift_jax.config_io import from_dict, save_config
from gift_jax.evaluation.evaluate import BenchmarkResult, write_results
from gift_jax.evaluation.run_report import read_inputs, report_rows
from gift_jax.rl.config import RLStageConfig
from gift_jax.runtime.metrics import MetricWriter
from gift_jax.train.init_config import InitStageConfig

PNG = b"\x89PNG\r\n\x1a\n"


def _workdir(folder, config, train: dict[int, dict], val: dict[int, dict]):
    """A stage workdir as the stages leave it: the resolved config and metrics.jsonl (+ TensorBoard)."""
    folder.mkdir(parents=True)
    save_config(config, folder / "config.json")
    writer = MetricWriter(folder, total_steps=max(train), enabled=True)
    for step in sorted(set(train) | set(val)):
        if step in train:
            writer.write(step, train[step], prefix="train/")
        if step in val:
            writer.write(step, val[step], prefix="val/")
    writer.close()
    return folder


def _init(root, name, loss: dict, val_losses: list[float]):
    config = from_dict(
        InitStageConfig,
        {
            "model": {"path": str(root / "base")},
            "data": {"train_file": "init.jsonl"},
            "loss": loss,
            "optim": {"lr": 2e-5},
        },
    )
    train = {step: {"loss": 3.0 - 0.1 * step} for step in range(1, 9)}
    val = {2 * (i + 1): {"val_loss": v} for i, v in enumerate(val_losses)}
    return _workdir(root / name, config, train, val)


def _rl(root, name, model_path, accuracies: list[float]):
    config = from_dict(RLStageConfig, {"model": {"path": str(model_path)}, "data": {"train_file": "rl.jsonl"}})
    train = {
        step: {"reward_mean": 0.1 * step, "accuracy": 0.1 * step, "response_length_mean": 100.0, "entropy": 0.5}
        | {"kl_to_base": 0.01 * step, "clip_frac": 0.002}
        for step in range(1, 5)
    }
    val = {2 * (i + 1): {"avg@4": a, "pass@1": a} for i, a in enumerate(accuracies)}
    return _workdir(root / name, config, train, val)


def _evaluation(folder, model_path, correct: dict[str, list[list[bool]]]):
    results = {
        name: BenchmarkResult(name, np.asarray(c), np.full(np.shape(c), 10), np.zeros(np.shape(c), bool), 1.0, 0)
        for name, c in correct.items()
    }
    write_results(results, folder, run_info={"model": str(model_path)})
    return folder


@pytest.fixture
def runs(tmp_path):
    """GIFT and SFT inits; GRPO from GIFT's hf_best and from the base; evaluations of both RL runs and of the
    SFT init (which no RL run continues)."""
    gift = _init(tmp_path, "gift", {"name": "gift", "beta": 4.0}, [2.5, 2.2, 2.3, 2.4])
    sft = _init(tmp_path, "sft", {"name": "sft"}, [2.6, 2.4, 2.45, 2.5])
    gift_rl = _rl(tmp_path, "gift_rl", gift / "hf_best", [0.25, 0.5])
    base_rl = _rl(tmp_path, "base_rl", tmp_path / "base", [0.125, 0.0])
    _evaluation(tmp_path / "evals" / "gift_rl", gift_rl / "hf_final", {"math": [[1, 1, 0, 1], [0, 0, 0, 1]]})
    _evaluation(tmp_path / "evals" / "base_rl", base_rl, {"math": [[0, 0, 0, 0], [0, 0, 0, 1]]})
    _evaluation(tmp_path / "evals" / "sft", sft / "hf_best", {"math": [[0, 1, 0, 0], [0, 0, 0, 0]], "aime": [[1, 1]]})
    return tmp_path


def test_rows_link_inits_rl_runs_and_evaluations_by_path(runs):
    rows = {row["run"]: row for row in report_rows(*read_inputs([runs, runs / "evals"]))}
    assert set(rows) == {"gift -> gift_rl", "base_rl", "sft"}
    gift = rows["gift -> gift_rl"]
    assert gift["init"] == "gift (beta=4, smooth_lambda=0)" and gift["init lr"] == "2e-05"
    assert gift["best val NLL"] == "2.2000" and gift["best step"] == "4 / 8"  # the lowest, at its update
    assert gift["RL"] == "grpo (lr=1e-06, group 8, kl 0)" and gift["RL steps"] == "4"
    assert gift["RL best val avg@k (step)"] == "50.0 (4)"
    assert gift["math avg@4"] == pytest.approx(100 * 4 / 8) and gift["math pass@4"] == pytest.approx(100.0)
    assert rows["base_rl"]["init"].startswith("none") and rows["base_rl"]["math avg@4"] == pytest.approx(12.5)
    # An init no RL run continues: its own evaluation, no RL cells.
    assert rows["sft"]["init"] == "sft (label_smoothing=0)" and "RL" not in rows["sft"]
    assert rows["sft"]["aime avg@2"] == pytest.approx(100.0) and rows["sft"]["math pass@4"] == pytest.approx(50.0)


def test_cli_writes_the_table_json_and_curves(runs, capsys):
    out = runs / "report"
    assert report_main([str(runs), str(runs / "evals"), "--out", str(out)]) == 0
    table = (out / "report.md").read_text()
    assert "| gift -> gift_rl | gift (beta=4, smooth_lambda=0) | 2e-05 | 2.2000 | 4 / 8 |" in table
    assert "![rl_curves](rl_curves.png)" in table and table in capsys.readouterr().out
    assert len(json.loads((out / "report.json").read_text())) == 3
    for plot in ("init_curves.png", "rl_curves.png"):
        assert (out / plot).read_bytes()[:8] == PNG


def test_a_folder_with_no_run_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert f"{tmp_path / 'empty'}: holds no stage workdir" in capsys.readouterr().err
