"""Logit parity with transformers, config layouts, and the export round trip."""

import json

import numpy as np
import pytest

from gift_jax.models import load_hf, read_config, save_hf
from tests.helpers import make_tiny_hf, torch_logits

CASES = [("qwen2", False, False), ("qwen2", True, False), ("llama", False, True), ("llama", True, False)]


@pytest.fixture(
    scope="module",
    params=CASES,
    ids=lambda c: f"{c[0]}-{'tied' if c[1] else 'untied'}" + ("-llama3rope" if c[2] else ""),
)
def tiny(request, tmp_path_factory):
    family, tied, scaling = request.param
    path = tmp_path_factory.mktemp(family)
    torch_model = make_tiny_hf(path, family, tied=tied, llama3_scaling=scaling)
    return path, torch_model


def _ids(batch=2, length=40, vocab=96, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, (batch, length))


def test_logits_match_transformers(tiny):
    path, torch_model = tiny
    model, _ = load_hf(path)
    ids = _ids()  # 40 > original_max_position_embeddings=32, so llama3 scaling is exercised
    diff = np.abs(np.asarray(model(ids)) - torch_logits(torch_model, ids)).max()
    assert diff <= 1e-4, diff


def test_right_padded_batch_matches_transformers(tiny):
    path, torch_model = tiny
    model, _ = load_hf(path)
    ids = _ids()
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    ours = np.asarray(model(ids, attention_mask=mask))
    ref = torch_logits(torch_model, ids, mask)
    assert np.abs(ours[mask == 1] - ref[mask == 1]).max() <= 1e-4


def test_export_round_trip_reloads_in_transformers(tiny, tmp_path):
    import transformers

    path, torch_model = tiny
    model, config = load_hf(path)
    out = save_hf(model, config, tmp_path / "export", tokenizer_dir=path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    ids = _ids(seed=1)
    diff = np.abs(torch_logits(reloaded, ids) - np.asarray(model(ids))).max()
    assert diff <= 1e-4, diff
    assert (out / "generation_config.json").exists()


def test_sharded_export_has_index_and_reloads(tiny, tmp_path):
    path, _ = tiny
    model, config = load_hf(path)
    out = save_hf(model, config, tmp_path / "sharded", max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again, _ = load_hf(out)
    ids = _ids(seed=2)
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(model(ids)))


def test_bfloat16_export_and_compute(tiny, tmp_path):
    path, _ = tiny
    model, config = load_hf(path, dtype="bfloat16")
    assert model.embed_tokens.embedding[...].dtype == np.float32  # float32 master weights
    out = save_hf(model, config, tmp_path / "bf16", dtype="bfloat16")
    again, again_config = load_hf(out, param_dtype="bfloat16", dtype="bfloat16")
    assert again_config.param_dtype == "bfloat16"
    ids = _ids(seed=3)
    ref = np.asarray(load_hf(path)[0](ids))
    assert np.abs(np.asarray(again(ids)) - ref).max() < 0.1  # bf16 rounding only


def test_old_top_level_rope_keys_are_read(tmp_path):
    make_tiny_hf(tmp_path, "llama", llama3_scaling=True)
    hf = json.loads((tmp_path / "config.json").read_text())
    params = hf.pop("rope_parameters")
    hf["rope_theta"] = params.pop("rope_theta")
    hf["rope_scaling"] = params  # the layout of published Llama-3.1 folders
    (tmp_path / "config.json").write_text(json.dumps(hf))
    config = read_config(tmp_path)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling is not None and config.rope_scaling.factor == 8.0


def test_save_refuses_to_overwrite(tiny, tmp_path):
    path, _ = tiny
    model, config = load_hf(path)
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="existing"):
        save_hf(model, config, tmp_path / "existing")
    assert (tmp_path / "existing" / "keep.txt").read_text() == "precious"
