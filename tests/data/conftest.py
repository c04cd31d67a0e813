"""Tiny model folders (a BPE tokenizer trained here + config files) for the data tests."""

import json
from pathlib import Path

import pytest

from tests.data.tiny_model import QWEN_STYLE_TEMPLATE, train_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer_json(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_tiny_tokenizer().save(str(path))
    return path.read_text()


@pytest.fixture
def make_model_dir(tmp_path, tiny_tokenizer_json):
    """Factory: make_model_dir(name, tokenizer_config=..., files={name: json-able or str}) -> folder."""

    def make(name="model", tokenizer_config=None, files=None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "tokenizer.json").write_text(tiny_tokenizer_json)
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
        config.update(tokenizer_config or {})
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        for file_name, content in (files or {}).items():
            text = content if isinstance(content, str) else json.dumps(content)
            (folder / file_name).write_text(text)
        return folder

    return make


@pytest.fixture
def qwen_style_model_dir(make_model_dir) -> Path:
    """Folder with the Qwen-style template in tokenizer_config.json, EOS <|endoftext|>, no PAD."""
    return make_model_dir(
        "qwen_style",
        tokenizer_config={"eos_token": "<|endoftext|>", "chat_template": QWEN_STYLE_TEMPLATE},
        files={"generation_config.json": {"eos_token_id": [2, 0]}},
    )
