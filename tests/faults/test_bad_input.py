"""Malformed configs, data files and model folders: one clear error naming the culprit, exit status 2,
and nothing already saved in the workdir is touched."""

import hashlib
import json
import re
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from experiments import init_stage
from tests.helpers import init_overrides, make_tiny_model_dir


def _argv(workdir, overrides):
    return ["--workdir", str(workdir), *(arg for o in overrides for arg in ("--set", o))]


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def trained_workdir(tiny_run_inputs, tmp_path_factory):
    """A workdir holding a finished run's checkpoints and results."""
    workdir = tmp_path_factory.mktemp("existing_run")
    assert init_stage.main(_argv(workdir, init_overrides(tiny_run_inputs, **{"train.epochs": 1}))) == 0
    return workdir


@pytest.mark.slow  # its fixture trains a run first
@pytest.mark.parametrize(
    "extra,message",
    [
        ({"train.lr": 1e-3}, r"--set train.lr=0.001: no such key in train; known: \[.*'global_batch'"),
        ({"train.global_batch": 12}, r"train.global_batch=12 is not divisible by batch devices \(8\)"),
        ({"mesh.data": 2, "mesh.fsdp": 3}, r"mesh .* needs 6 devices but 8 are available"),
        ({"loss.name": "sftt"}, r"loss.name='sftt' is not one of"),
        ({"train.epochs": "many"}, r"--set train.epochs=many: expected int, got 'many'"),
        ({"data.truncation": "left"}, r"data.truncation='left': expected 'right' or 'error'"),
    ],
)
def test_bad_config_is_refused_before_touching_the_workdir(tiny_run_inputs, trained_workdir, capsys, extra, message):
    before = _digest(trained_workdir)
    assert init_stage.main(_argv(trained_workdir, init_overrides(tiny_run_inputs, **extra))) == 2
    assert re.search(message, capsys.readouterr().err)
    assert _digest(trained_workdir) == before


def test_unreadable_config_file(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    assert init_stage.main(["--config", str(tmp_path / "bad.yaml"), "--workdir", str(tmp_path / "w")]) == 2
    assert "bad.yaml: not valid YAML/JSON" in capsys.readouterr().err


def _jsonl(path, lines):
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize(
    "content,message",
    [
        ([b'{"prompt": "a", "solution": "b"}\n'], r"train.jsonl.*sft_prompt"),
        ([b'{"sft_prompt": "a", "solution": 7}\n'], r"train.jsonl.*row 0|train.jsonl.*line 1"),
        ([], r"train.jsonl"),
        ([b'{"sft_prompt": "a", "solution": "\xff\xfe"}\n'], r"train.jsonl.*(UTF-8|utf-8)"),
    ],
)
def test_malformed_data_names_file_and_culprit(tiny_run_inputs, tmp_path, capsys, content, message):
    bad = _jsonl(tmp_path / "train.jsonl", content)
    overrides = init_overrides({**tiny_run_inputs, "train": bad})
    assert init_stage.main(_argv(tmp_path / "run", overrides)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_over_length_sample_with_truncation_error_names_the_row(tiny_run_inputs, tmp_path, capsys):
    overrides = init_overrides(
        tiny_run_inputs, **{"data.truncation": "error", "data.max_length": 40, "data.bucket_lengths": "[40]"}
    )
    assert init_stage.main(_argv(tmp_path / "run", overrides)) == 2
    assert "row 0" in capsys.readouterr().err


def test_missing_data_file(tiny_run_inputs, tmp_path, capsys):
    overrides = init_overrides({**tiny_run_inputs, "train": tmp_path / "nope.jsonl"})
    assert init_stage.main(_argv(tmp_path / "run", overrides)) == 2
    err = capsys.readouterr().err
    assert "data.train_file: " in err and "nope.jsonl does not exist" in err


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("missing", r"missing tensor 'model.layers.1.mlp.down_proj.weight'"),
        ("shape", r"'model.norm.weight' has shape \(7,\), expected \(32,\)"),
        ("architecture", r"unsupported architecture \['BertModel'\]"),
    ],
)
def test_broken_model_folder_is_named(tiny_run_inputs, tmp_path, capsys, breakage, message):
    model = tmp_path / "model"
    make_tiny_model_dir(model)
    tensors = load_file(str(model / "model.safetensors"))
    if breakage == "missing":
        del tensors["model.layers.1.mlp.down_proj.weight"]
    elif breakage == "shape":
        tensors["model.norm.weight"] = tensors["model.norm.weight"][:7]
    else:
        config = json.loads((model / "config.json").read_text())
        config["architectures"] = ["BertModel"]
        (model / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(model / "model.safetensors"))
    overrides = init_overrides({**tiny_run_inputs, "model": model})
    assert init_stage.main(_argv(tmp_path / "run", overrides)) == 2
    assert re.search(message, capsys.readouterr().err)
