"""Any orbax step of a run restores as a model and exports as an HF folder, equal to the trainer's own exports."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from experiments.evaluate import main as evaluate_main
from experiments.export_hf import main as export_main
from gift_jax.config_io import load_config
from gift_jax.models import load_hf
from gift_jax.runtime.run_checkpoints import is_run_workdir, load_run_checkpoint
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage
from tests.helpers import init_overrides

pytestmark = pytest.mark.slow  # trains an init and an RL run


@pytest.fixture(scope="module")
def run(tiny_run_inputs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = load_config(InitStageConfig, None, init_overrides(tiny_run_inputs, **{"train.export_hf": True}))
    summary = run_init_stage(config, workdir)
    return workdir, summary


def _tensors(folder):
    return load_file(str(next(folder.glob("*.safetensors"))))


def test_exported_steps_equal_the_trainers_final_and_best_exports(run, tmp_path):
    workdir, summary = run
    assert is_run_workdir(workdir) and not is_run_workdir(summary["hf_final"])
    assert export_main(["--workdir", str(workdir), "--out", str(tmp_path / "last")]) == 0  # newest periodic
    assert export_main(["--workdir", str(workdir), "--out", str(tmp_path / "best"), "--kind", "best"]) == 0
    for ours, trainers in (("last", summary["hf_final"]), ("best", summary["hf_best"])):
        got, want = _tensors(tmp_path / ours), _tensors(workdir / trainers)
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert (tmp_path / ours / "tokenizer.json").is_file()


def test_an_earlier_step_differs_and_loads(run):
    workdir, summary = run
    model, _, tokenizer_dir, step = load_run_checkpoint(workdir, step=3)
    final, _ = load_hf(summary["hf_final"])
    assert step == 3 and (tokenizer_dir / "tokenizer.json").is_file()
    ids = np.arange(12).reshape(2, 6) % 50 + 3
    assert not np.allclose(np.asarray(model(ids)), np.asarray(final(ids)))  # training moved on after step 3


def test_missing_steps_and_non_runs_are_named(run, tmp_path, capsys):
    workdir, _ = run
    assert export_main(["--workdir", str(workdir), "--out", str(tmp_path / "x"), "--step", "99"]) == 2
    assert "no step 99; saved steps: [3, 6]" in capsys.readouterr().err
    assert export_main(["--workdir", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "no run config here" in capsys.readouterr().err


def test_evaluate_accepts_a_run_workdir(run, tmp_path):
    workdir, _ = run
    (tmp_path / "bench.jsonl").write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2"}) + "\n")
    evaluate_main(
        [
            "--model",
            str(workdir),
            "--step",
            "3",
            "--benchmarks",
            f"toy={tmp_path / 'bench.jsonl'}",
            "--out",
            str(tmp_path / "eval"),
            "--k",
            "2",
            "--max-new-tokens",
            "4",
            "--dtype",
            "float32",
            "--no-progress",
        ]
    )
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["run"]["checkpoint"] == {"kind": "periodic", "step": 3} and "avg@2" in results["benchmarks"]["toy"]


def test_an_rl_run_exports_too(tiny_run_inputs, tmp_path):
    from gift_jax.rl.config import RLStageConfig
    from gift_jax.rl.trainer import run_rl_stage
    from tests.helpers import rl_overrides, write_rl_jsonl

    overrides = rl_overrides(
        tiny_run_inputs["model"],
        write_rl_jsonl(tmp_path / "rl.jsonl", 16),
        **{"algo.method": "luffy", "train.export_hf": True},
    )
    summary = run_rl_stage(load_config(RLStageConfig, None, overrides), tmp_path / "rl", max_steps=2)
    assert export_main(["--workdir", str(tmp_path / "rl"), "--out", str(tmp_path / "last")]) == 0
    got, want = _tensors(tmp_path / "last"), _tensors(tmp_path / "rl" / summary["hf_final"])
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_evaluate_names_a_missing_step_and_refuses_step_for_a_model_folder(run, tmp_path, capsys):
    workdir, summary = run
    (tmp_path / "bench.jsonl").write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2"}) + "\n")
    common = ["--benchmarks", f"toy={tmp_path / 'bench.jsonl'}", "--out", str(tmp_path / "eval"), "--no-progress"]
    assert evaluate_main(["--model", str(workdir), "--step", "99", *common]) == 2
    assert "no step 99; saved steps: [3, 6]" in capsys.readouterr().err
    assert evaluate_main(["--model", summary["hf_final"], "--step", "3", *common]) == 2
    assert "is a model folder" in capsys.readouterr().err


def _digest(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_never_replaces_a_run_or_a_part_of_one(run, tmp_path, capsys):
    workdir, _ = run
    before = _digest(workdir)
    runs = tmp_path / "runs"  # a folder of runs (only this one: the message names what it finds first)
    shutil.copytree(workdir, runs / "gift")
    for out, found in (
        (workdir, "refusing to overwrite a run workdir (it holds checkpoints/)"),
        (workdir / "checkpoints", f"refusing to overwrite a folder inside the run workdir {workdir}"),
        (runs, f"refusing to overwrite a folder that contains the run workdir {runs / 'gift'}"),
    ):
        assert export_main(["--workdir", str(workdir), "--out", str(out), "--overwrite"]) == 2
        assert found in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main(["--workdir", str(workdir), "--out", str(workdir / "hf_best")])
    assert f"--out {workdir / 'hf_best'} exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert _digest(workdir) == before and _digest(runs / "gift") == before


def test_evaluate_refuses_an_out_folder_with_results_a_model_or_a_run(run, tmp_path, capsys):
    workdir, summary = run
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2"}) + "\n")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text("{}")
    for out, found in (
        (tmp_path / "old", "earlier results (results.json)"),
        (summary["hf_final"], "a model (config.json + *.safetensors)"),
        (workdir, "a run workdir (checkpoints/)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main(["--model", str(workdir), "--benchmarks", f"toy={bench}", "--out", str(out)])
        assert exit_info.value.code == 2 and found in capsys.readouterr().err
    assert (tmp_path / "old" / "results.json").read_text() == "{}"


@pytest.mark.parametrize(
    "flag,value", [("--k", "0"), ("--temperature", "-1"), ("--max-new-tokens", "0"), ("--limit", "0"), ("--top-p", "2")]
)
def test_evaluate_refuses_out_of_range_flags_by_name(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--model", str(tmp_path), "--benchmarks", "toy=x.jsonl", "--out", str(tmp_path), flag, value])
    assert exit_info.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_evaluate_names_a_run_without_checkpoints_and_one_whose_steps_are_all_unreadable(run, tmp_path, capsys):
    workdir, _ = run
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2"}) + "\n")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(workdir / "config.json", fresh / "config.json")  # a run that has saved nothing yet
    common = ["--benchmarks", f"toy={bench}", "--no-progress", "--max-new-tokens", "2"]
    assert evaluate_main(["--model", str(fresh), "--out", str(tmp_path / "e1"), *common]) == 2
    assert "no periodic checkpoint" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    shutil.copytree(workdir, damaged)
    for data in (damaged / "checkpoints" / "periodic").glob("*/state/d/*"):
        data.write_bytes(b"\0" * data.stat().st_size)
    assert evaluate_main(["--model", str(damaged), "--out", str(tmp_path / "e2"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "periodic/6: unreadable" in err[0]
