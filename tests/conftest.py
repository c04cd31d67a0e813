"""Test setup: 8 forced CPU devices (set before jax is imported) and shared tiny fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from tests.helpers import make_tiny_model_dir, write_sft_jsonl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("init_inputs")
    make_tiny_model_dir(root / "model")
    return {
        "model": root / "model",
        "train": write_sft_jsonl(root / "train.jsonl", 48),
        "val": write_sft_jsonl(root / "val.jsonl", 16, seed=1),
    }
