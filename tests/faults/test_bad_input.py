"""Malformed configs, data files and model folders: one clear error naming the culprit, exit status 2,
and nothing already saved in the workdir is touched."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from experiments import init_stage, rl_stage
from tests.helpers import init_overrides, make_tiny_model_dir, rl_overrides, write_rl_jsonl


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


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"optim.clip_norm": -1}, r"clip_norm must be > 0"),
        ({"optim.b2": 1.5}, r"b2 must be in \[0, 1\), got 1.5"),
        ({"optim.eps": -1}, r"eps must be > 0"),
        ({"optim.weight_decay": -5}, r"weight_decay must be >= 0"),
        ({"train.seed": -1}, r"seed must be >= 0, got -1"),
        ({"data.bucket_lengths": "[96, 32]"}, r"bucket_lengths \[96, 32\] must be positive and strictly increasing"),
        ({"model.chat_template": "nope"}, r"model.chat_template='nope' is not one of"),
        ({"train.checkpoint_every_minutes": 0}, r"checkpoint_every_minutes must be > 0"),
        ({"train.max_consecutive_skipped": 0}, r"max_consecutive_skipped must be >= 1"),
    ],
)
def test_out_of_range_init_settings_are_refused_by_key_before_the_workdir_is_touched(
    tiny_run_inputs, tmp_path, capsys, extra, message
):
    assert init_stage.main(_argv(tmp_path / "run", init_overrides(tiny_run_inputs, **extra))) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"algo.clip_high": 100}, r"clip_high must be < 1, got 100"),
        ({"algo.entropy_coef": -1}, r"entropy_coef must be >= 0"),
        ({"reward.timeout_s": -1}, r"timeout_s must be > 0"),
        ({"reward.num_workers": 0}, r"num_workers must be >= 1"),
        ({"data.val_limit": -1}, r"val_limit must be >= 1"),
        ({"data.val_limit": 0}, r"val_limit must be >= 1"),
        ({"train.eval_temperature": -1}, r"eval_temperature must be >= 0"),
    ],
)
def test_out_of_range_rl_settings_are_refused_by_key(tiny_run_inputs, tmp_path, capsys, extra, message):
    prompts = write_rl_jsonl(tmp_path / "rl.jsonl", 8)
    assert rl_stage.main(_argv(tmp_path / "run", rl_overrides(tiny_run_inputs["model"], prompts, **extra))) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("flag", ["-3", "0", "two"])
def test_max_steps_below_one_is_a_usage_error(tiny_run_inputs, tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_:
        init_stage.main(_argv(tmp_path / "run", init_overrides(tiny_run_inputs)) + ["--max-steps", flag])
    assert exit_.value.code == 2 and "--max-steps" in capsys.readouterr().err


def test_rl_prompt_longer_than_the_context_is_refused_naming_the_row(tiny_run_inputs, tmp_path, capsys):
    prompts = write_rl_jsonl(tmp_path / "rl.jsonl", 8)
    rows = prompts.read_text().splitlines()
    rows[5] = json.dumps({"prompt": "What is " + " + ".join(["7"] * 200) + "?", "answer": "1400", "solution": "x"})
    prompts.write_text("\n".join(rows) + "\n")
    assert rl_stage.main(_argv(tmp_path / "run", rl_overrides(tiny_run_inputs["model"], prompts))) == 2
    err = capsys.readouterr().err
    assert re.search(r"rl.jsonl: row 5: field 'prompt' is \d+ tokens .* model's context \(256", err)


def test_a_tokenizer_bigger_than_the_vocabulary_is_refused(tiny_run_inputs, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_run_inputs["model"], model)
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] = 100  # the tiny tokenizer emits 320 ids
    (model / "config.json").write_text(json.dumps(config))
    assert init_stage.main(_argv(tmp_path / "run", init_overrides({**tiny_run_inputs, "model": model}))) == 2
    assert "the tokenizer can emit ids up to 319" in capsys.readouterr().err


@pytest.mark.slow  # two short runs
def test_a_failed_launch_never_blocks_the_corrected_one(tiny_run_inputs, tmp_path, capsys):
    # A model folder whose weights turn out bad is found after the lock is taken, before any checkpoint: the
    # corrected launch (another model.path, so another config) takes the same workdir.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run_inputs["model"], broken)
    tensors = load_file(str(broken / "model.safetensors"))
    tensors["model.norm.weight"][0] = float("nan")
    save_file(tensors, str(broken / "model.safetensors"))
    workdir = tmp_path / "run"
    assert init_stage.main(_argv(workdir, init_overrides({**tiny_run_inputs, "model": broken}))) == 2
    assert "'model.norm.weight' holds 1 non-finite" in capsys.readouterr().err
    assert init_stage.main(_argv(workdir, init_overrides(tiny_run_inputs, **{"train.epochs": 1}))) == 0


def test_an_internal_value_error_keeps_its_traceback(tiny_run_inputs, tmp_path, monkeypatch):
    def broken_step(*args, **kwargs):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(init_stage, "run_init_stage", broken_step)
    with pytest.raises(ValueError, match="a bug, not bad input"):
        init_stage.main(_argv(tmp_path / "run", init_overrides(tiny_run_inputs)))


def test_a_bad_validation_file_is_refused_before_the_workdir_is_claimed(tiny_run_inputs, tmp_path, capsys):
    bad = _jsonl(tmp_path / "val.jsonl", [b'{"sft_prompt": "a"}\n'])
    assert init_stage.main(_argv(tmp_path / "run", init_overrides({**tiny_run_inputs, "val": bad}))) == 2
    assert re.search(r"val.jsonl.*solution", capsys.readouterr().err)
    assert not (tmp_path / "run" / "config.json").exists()
