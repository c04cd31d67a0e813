"""The prompt format's pieces: the user turn, the record an export carries, and old run configs."""

import json

import pytest

from gift_jax.data import DEFAULT_INSTRUCTION, PromptFormat, load_tokenizer
from gift_jax.data.chat_templates import NAMED_CHAT_TEMPLATES
from gift_jax.data.prompt_format import export_files, read_prompt_record, warn_if_trained_otherwise
from gift_jax.runtime.workdir import upgrade_run_config


def test_user_turn_and_system_turn(qwen_style_model_dir):
    assert PromptFormat().user_message(" What is 1 + 1?\n") == f"What is 1 + 1?\n\n{DEFAULT_INSTRUCTION}"
    assert PromptFormat(instruction=None).user_message("What is 1 + 1?\n") == "What is 1 + 1?"
    plain, with_system = (load_tokenizer(qwen_style_model_dir, system_prompt=s) for s in (None, "Be brief."))
    assert "You are a helpful assistant." in plain.apply_chat_template("Hi")  # the template's own default
    assert with_system.apply_chat_template("Hi").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert plain.fingerprint != with_system.fingerprint  # a cached dataset is never reused across them


def test_export_record_round_trip_and_warning(tmp_path):
    prompt = PromptFormat(instruction="Box it.", system_prompt=None)
    files = export_files(prompt, "qwen-2.5-math")
    assert files["chat_template.jinja"] == NAMED_CHAT_TEMPLATES["qwen-2.5-math"]  # what transformers reads too
    assert set(export_files(prompt, None)) == {"prompt_format.json"}  # the folder's own template stays
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert read_prompt_record(tmp_path) == prompt and read_prompt_record(tmp_path / "none") is None
    with pytest.warns(UserWarning, match=r"model.path .* was trained with prompt .*'Box it.'"):
        warn_if_trained_otherwise(tmp_path, PromptFormat(), "model.path")
    (tmp_path / "prompt_format.json").write_text("{")
    with pytest.raises(ValueError, match="prompt_format.json: unreadable prompt record"):
        read_prompt_record(tmp_path)


def test_configs_saved_before_the_prompt_setting_read_as_the_question_alone():
    old = {"model": {"path": "m"}, "data": {"train_file": "f", "val_instruction": "Box it."}}
    upgraded = upgrade_run_config(json.loads(json.dumps(old)))
    assert upgraded["model"]["prompt"] == {"instruction": None, "system_prompt": None}
    assert "val_instruction" not in upgraded["data"]
    today = {"model": {"path": "m", "prompt": {"instruction": "x", "system_prompt": None}}, "data": {}}
    assert upgrade_run_config(today)["model"]["prompt"]["instruction"] == "x"
