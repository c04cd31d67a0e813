"""What may change when a run resumes: resumable keys (intervals, limits, workers) are logged, any other key
and any data file whose content changed are refused by name, before anything is loaded."""

import json
import re

import pytest

from experiments import init_stage
from gift_jax.config_io import load_config, to_dict
from gift_jax.runtime.workdir import WorkdirRefused, check_resume, data_fingerprints, save_run_identity
from gift_jax.train.init_config import InitStageConfig
from tests.helpers import init_overrides


def _config(inputs, **extra):
    return load_config(InitStageConfig, None, init_overrides(inputs, **extra))


def _with_checkpoint(workdir, config):
    (workdir / "checkpoints" / "periodic" / "4").mkdir(parents=True)
    save_run_identity(workdir, config, data_fingerprints(config))


def test_resumable_keys_are_listed_and_other_keys_refused_with_both_values(tiny_run_inputs, tmp_path):
    config = _config(tiny_run_inputs)
    _with_checkpoint(tmp_path, config)
    changed = _config(tiny_run_inputs, **{"train.log_every": 2, "train.checkpoint_every_minutes": 30})
    notes = check_resume(tmp_path, changed, data_fingerprints(changed))
    assert notes == ["train.checkpoint_every_minutes: None -> 30.0", "train.log_every: 10 -> 2"]
    other = _config(tiny_run_inputs, **{"loss.beta": 8.0, "optim.lr": 1e-4})
    with pytest.raises(WorkdirRefused) as refused:
        check_resume(tmp_path, other, data_fingerprints(other))
    assert "loss.beta: 5.0 -> 8.0" in str(refused.value) and "optim.lr: 0.003 -> 0.0001" in str(refused.value)


def test_a_workdir_without_checkpoints_takes_any_config(tiny_run_inputs, tmp_path):
    save_run_identity(tmp_path, _config(tiny_run_inputs), {})
    other = _config(tiny_run_inputs, **{"loss.beta": 8.0})
    assert check_resume(tmp_path, other, data_fingerprints(other)) == []


def test_changed_data_is_refused_unless_allowed(tiny_run_inputs, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(tiny_run_inputs["train"].read_text())
    config = _config({**tiny_run_inputs, "train": train})
    _with_checkpoint(tmp_path / "run", config)
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same rows, another order: same count, new content
    with pytest.raises(WorkdirRefused, match=r"data.train_file .*--allow-changed-data"):
        check_resume(tmp_path / "run", config, data_fingerprints(config))
    notes = check_resume(tmp_path / "run", config, data_fingerprints(config), allow_changed_data=True)
    assert notes == ["data.train_file: new content"]


def test_a_saved_config_of_an_older_layout_resumes(tiny_run_inputs, tmp_path):
    config = _config(tiny_run_inputs)
    _with_checkpoint(tmp_path, config)
    saved = to_dict(config)
    saved["data"]["chat_template"] = saved["model"].pop("chat_template")  # where older versions kept it
    del saved["train"]["max_consecutive_skipped"]  # a key added since: today's default
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert check_resume(tmp_path, config, data_fingerprints(config)) == []


@pytest.mark.slow  # a short run, then resumed twice
def test_resume_names_its_checkpoint_and_changes_through_the_command_line(tiny_run_inputs, tmp_path, capsys):
    def argv(**extra):
        overrides = init_overrides(tiny_run_inputs, **{"train.checkpoint_every": 1, **extra})
        return ["--workdir", str(tmp_path / "run"), *(a for o in overrides for a in ("--set", o))]

    assert init_stage.main(argv() + ["--max-steps", "2"]) == 0
    capsys.readouterr()
    assert init_stage.main(argv(**{"loss.beta": 9.0})) == 2
    assert re.search(r"config.json: .*changed: loss.beta: 5.0 -> 9.0", capsys.readouterr().err)
    assert init_stage.main(argv(**{"train.log_every": 2}) + ["--max-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from loop step 2 of 3: {tmp_path / 'run' / 'checkpoints' / 'periodic' / '2'}" in out
    assert "changed on resume: train.log_every: 10 -> 2" in out
