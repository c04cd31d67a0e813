"""Each broken Hugging Face folder gives an error that names the culprit."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gift_jax.models import CheckpointError, load_hf
from tests.helpers import make_tiny_hf


@pytest.fixture()
def folder(tmp_path):
    make_tiny_hf(tmp_path, "qwen2")
    return tmp_path


def _edit_tensors(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_unsupported_architecture(folder):
    hf = json.loads((folder / "config.json").read_text())
    hf["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="unsupported architecture.*GPT2LMHeadModel"):
        load_hf(folder)


def test_missing_tensor(folder):
    _edit_tensors(folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        load_hf(folder)


def test_shape_mismatch_names_tensor_and_both_shapes(folder):
    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)

    _edit_tensors(folder, shrink)
    with pytest.raises(
        CheckpointError,
        match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape "
        r"\(8, 32\), expected \(16, 32\)",
    ):
        load_hf(folder)


def test_unexpected_tensor(folder):
    _edit_tensors(folder, lambda t: t.update({"model.layers.0.mystery.weight": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.mystery.weight'"):
        load_hf(folder)


def test_unreadable_safetensors(folder):
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable"):
        load_hf(folder)


def test_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: not found"):
        load_hf(tmp_path)


def test_malformed_config(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        load_hf(folder)


def test_config_missing_key(folder):
    hf = json.loads((folder / "config.json").read_text())
    del hf["hidden_size"]
    (folder / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="missing required key 'hidden_size'"):
        load_hf(folder)


def test_dtypes_are_names_or_jax_dtypes_and_others_are_named(folder):
    import jax.numpy as jnp

    _, by_dtype = load_hf(folder, dtype=jnp.bfloat16, param_dtype=np.float32)
    _, by_name = load_hf(folder, dtype="bfloat16", param_dtype="float32")
    assert by_dtype == by_name and by_dtype.dtype == "bfloat16" and by_dtype.param_dtype == "float32"
    with pytest.raises(ValueError, match="dtype: dtype 'float8'; expected one of"):
        load_hf(folder, dtype="float8")
    with pytest.raises(ValueError, match="param_dtype: dtype .*int32"):
        load_hf(folder, param_dtype=jnp.int32)


def test_non_finite_weight_is_refused_naming_the_tensor(folder):
    def poison(t):
        t["model.layers.1.mlp.down_proj.weight"][3, 5] = np.nan

    _edit_tensors(folder, poison)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.mlp\.down_proj\.weight' holds 1 non-finite"):
        load_hf(folder)


def test_a_tensor_in_two_files_is_refused_naming_both(folder):
    tensors = load_file(str(folder / "model.safetensors"))
    zeros = {name: np.zeros_like(value) for name, value in tensors.items()}
    save_file(zeros, str(folder / "model.safetensors.bak.safetensors"))  # e.g. a stray copy beside the real file
    with pytest.raises(CheckpointError, match=r"in both model.safetensors and model.safetensors.bak.safetensors"):
        load_hf(folder)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("hidden_act", "gelu", r"config.json: key 'hidden_act' is 'gelu'; only SiLU MLPs are implemented"),
        ("use_sliding_window", True, r"key 'use_sliding_window' is True; sliding-window attention is not implemented"),
        ("num_hidden_layers", "two", r"config.json: key 'num_hidden_layers': expected int, got 'two'"),
        ("rms_norm_eps", "tiny", r"config.json: key 'rms_norm_eps': expected float, got 'tiny'"),
        ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, r"unsupported rope scaling type 'yarn'"),
    ],
)
def test_config_settings_the_model_lacks_or_mistyped_are_named(folder, key, value, message):
    hf = json.loads((folder / "config.json").read_text())
    hf[key] = value
    (folder / "config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match=message):
        load_hf(folder)


def test_an_export_killed_half_way_is_undone(folder, tmp_path):
    from gift_jax.models.hf_io import recover_interrupted_export

    parent = tmp_path / "run"
    (parent / ".hf_final.tmp-abc123").mkdir(parents=True)  # killed while writing
    (parent / ".hf_final.tmp-abc123" / "model.safetensors").write_bytes(b"partial")
    (parent / ".hf_best.old").mkdir()  # killed between setting the old export aside and renaming the new one in
    (parent / ".hf_best.old" / "config.json").write_text("{}")
    recover_interrupted_export(parent / "hf_final")
    recover_interrupted_export(parent / "hf_best")
    assert sorted(p.name for p in parent.iterdir()) == ["hf_best"]  # the previous export is back, no leftovers
    assert (parent / "hf_best" / "config.json").read_text() == "{}"
