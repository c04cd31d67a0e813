"""Exports every reader loads the same: transformers 5.x in this environment, transformers 4.x in its own folder.

A Qwen2 at rope_theta 1e6 and a Llama-3.1-style model with llama3 rope scaling, a sequence well past
the scaling's original context and attention sharp enough that a wrong rope moves the logits by far
more than the tolerance (each test checks that too, on a copy of the export whose rope settings a
reader would get wrong). transformers 4.x reads only the top-level `rope_theta` / `rope_scaling`; the
4.x check installs it once into the pytest cache (`pip install --target`, no dependencies: they are the
test environment's) and loads the export in a subprocess.
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gift_jax.models import load_hf, save_hf
from tests.helpers import make_tiny_hf, torch_logits

LENGTH = 256  # positions; the llama3 case's original context is 64
TOLERANCE = 1e-4
ROPE_CASES = {
    "qwen2-theta1e6": dict(family="qwen2", rope_theta=1e6),
    "llama3.1-scaled": dict(
        family="llama",
        rope_theta=500000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
    ),
}
TRANSFORMERS_4 = ("transformers>=4.50,<5", "tokenizers>=0.22,<=0.23.0", "huggingface-hub>=0.34,<1.0")


def _sharpen_attention(torch_model, scale: float = 4.0) -> None:
    """Unit norm weights and large q / k projections: attention then picks a few keys by their rotated
    dot products, so a wrong rotary frequency changes which keys, not just the weights a little."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in torch_model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                fan_in = param.shape[1]
                param.copy_(torch.randn(param.shape, generator=generator) * scale / fan_in**0.5)


@pytest.fixture(scope="module", params=sorted(ROPE_CASES))
def export(request, tmp_path_factory):
    """(source torch model, our export folder, the token ids, the source's logits)."""
    root = tmp_path_factory.mktemp(request.param)
    torch_model = make_tiny_hf(
        root / "source",
        **ROPE_CASES[request.param],
        adjust=_sharpen_attention,
        hidden_size=64,
        max_position_embeddings=1024,
    )
    model, model_config = load_hf(root / "source")
    out = save_hf(model, model_config, root / "export", tokenizer_dir=root / "source")
    ids = np.random.RandomState(0).randint(0, torch_model.config.vocab_size, (2, LENGTH))
    return torch_model, out, ids, torch_logits(torch_model, ids)


def _with_rope_layout_of_old_exports(folder: Path, target: Path) -> Path:
    """A copy of `folder` whose config.json has only `rope_parameters`: how exports were written
    before, and what transformers 4.x reads as theta 10000 without scaling."""
    shutil.copytree(folder, target)
    hf = json.loads((target / "config.json").read_text())
    del hf["rope_theta"], hf["rope_scaling"]
    (target / "config.json").write_text(json.dumps(hf, indent=2))
    return target


def _with_default_rope(folder: Path, target: Path) -> Path:
    """A copy of `folder` whose rope settings (both layouts) are theta 10000 without scaling."""
    shutil.copytree(folder, target)
    hf = json.loads((target / "config.json").read_text())
    hf["rope_theta"], hf["rope_scaling"] = 10000.0, None
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    (target / "config.json").write_text(json.dumps(hf, indent=2))
    return target


def test_both_rope_layouts_are_written_and_agree(export):
    torch_model, out, _, _ = export
    hf = json.loads((out / "config.json").read_text())
    source = torch_model.config.rope_parameters
    assert hf["rope_theta"] == hf["rope_parameters"]["rope_theta"] == source["rope_theta"]
    if source["rope_type"] == "llama3":
        scaling = {k: v for k, v in source.items() if k != "rope_theta"}
        assert hf["rope_scaling"] == scaling
        assert {k: v for k, v in hf["rope_parameters"].items() if k != "rope_theta"} == scaling
    else:
        assert hf["rope_scaling"] is None and hf["rope_parameters"]["rope_type"] == "default"


def test_export_keeps_what_the_source_folder_had(export):
    _, out, _, _ = export
    source = out.parent / "source"
    assert (out / "generation_config.json").read_text() == (source / "generation_config.json").read_text()
    hf, source_hf = (json.loads((f / "config.json").read_text()) for f in (out, source))
    assert hf["torch_dtype"] == hf["dtype"] == "float32"
    for key in ("initializer_range", "use_cache", "attention_dropout"):  # not ours to describe, still true
        assert hf[key] == source_hf[key]
    assert "transformers_version" not in hf  # says which library wrote a file: not this one


def test_transformers_5_reads_the_source_logits(export, tmp_path):
    import transformers

    _, out, ids, source_logits = export
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert np.abs(torch_logits(loaded, ids) - source_logits).max() <= TOLERANCE
    # The check can fail: with the rope a reader would get wrong, the logits move by far more.
    wrong = transformers.AutoModelForCausalLM.from_pretrained(_with_default_rope(out, tmp_path / "wrong"))
    assert np.abs(torch_logits(wrong, ids) - source_logits).max() > 100 * TOLERANCE


@pytest.fixture(scope="session")
def transformers_4(pytestconfig, tmp_path_factory) -> Path:
    """A folder holding transformers 4.x (installed once into the pytest cache, under a file lock)."""
    cache = getattr(pytestconfig, "cache", None)  # None under -p no:cacheprovider: install for this session
    folder = Path(cache.mkdir("transformers4") if cache else tmp_path_factory.mktemp("transformers4"))
    with open(folder.parent / "transformers4.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "transformers" / "__init__.py").is_file():
            installed = subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--target", str(folder), "--no-deps", *TRANSFORMERS_4],
                capture_output=True,
                text=True,
            )
            if installed.returncode:
                pytest.skip(f"cannot install transformers 4.x (no package index?): {installed.stderr[-500:]}")
    return folder


_LOAD_WITH_4X = """
import sys
import numpy as np, torch, transformers
assert transformers.__version__.startswith("4."), transformers.__version__
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(input_ids=torch.as_tensor(np.load(sys.argv[2]))).logits.float().numpy()
np.save(sys.argv[3], logits)
"""


def _logits_with_transformers_4(site: Path, folder: Path, ids: np.ndarray, work: Path) -> np.ndarray:
    np.save(work / "ids.npy", ids)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(
        [sys.executable, "-c", _LOAD_WITH_4X, str(folder), str(work / "ids.npy"), str(work / "logits.npy")],
        env=env,
        check=True,
        capture_output=True,
    )
    return np.load(work / "logits.npy")


@pytest.mark.slow  # installs transformers 4.x once (~20 s) and loads each export in a subprocess
def test_transformers_4_reads_the_source_logits(export, transformers_4, tmp_path):
    _, out, ids, source_logits = export
    assert np.abs(_logits_with_transformers_4(transformers_4, out, ids, tmp_path) - source_logits).max() <= TOLERANCE
    # Exports written with `rope_parameters` only: 4.x silently used theta 10000 and no scaling.
    old = _with_rope_layout_of_old_exports(out, tmp_path / "old")
    assert (
        np.abs(_logits_with_transformers_4(transformers_4, old, ids, tmp_path) - source_logits).max() > 100 * TOLERANCE
    )
