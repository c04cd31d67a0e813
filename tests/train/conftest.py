"""A tiny model folder and demonstration files shared by the trainer tests."""
import pytest

from tests.helpers import make_tiny_model_dir, write_sft_jsonl


@pytest.fixture(scope="session")
def tiny_run_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("init_inputs")
    make_tiny_model_dir(root / "model")
    return {"model": root / "model", "train": write_sft_jsonl(root / "train.jsonl", 48),
            "val": write_sft_jsonl(root / "val.jsonl", 16, seed=1)}


def init_overrides(inputs, **extra):
    """Overrides for a seconds-long init-stage run on the tiny inputs."""
    base = {"model.path": inputs["model"], "data.train_file": inputs["train"], "data.val_file": inputs["val"],
            "data.max_length": 96, "data.bucket_lengths": "[96]", "data.num_threads": 0,
            "train.global_batch": 16, "train.micro_batch_per_device": 1, "train.epochs": 2,
            "train.export_hf": False, "optim.lr": 3e-3, "loss.chunk_size": 64, "loss.beta": 5.0}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
