"""The paper's configs run end to end (same scripts, same settings) on a tiny random checkpoint and a
tiny DeepMath-layout parquet, with only sizes and paths overridden."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experiments import init_stage, prepare_deepmath, rl_stage
from tests.helpers import make_tiny_model_dir

pytestmark = pytest.mark.slow  # runs the paper configs end to end on tiny inputs

REPO = Path(__file__).resolve().parents[2]

CONFIGS = REPO / "experiments" / "configs"


@pytest.fixture(scope="module")
def deepmath(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepmath")
    rows = [
        {
            "question": f"What is {a} + {a + 1}?",
            "final_answer": str(2 * a + 1),
            "difficulty": 3.0,
            "r1_solution_1": f"Add them: {a} + {a + 1} = {2 * a + 1}. \\boxed{{{2 * a + 1}}}",
            "r1_solution_2": "",
            "r1_solution_3": "",
        }
        for a in range(48)
    ]
    (root / "source").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "source" / "train-00000.parquet")
    args = ["--source", str(root / "source"), "--out", str(root / "split"), "--init", "16", "--rl", "16", "--val", "8"]
    assert prepare_deepmath.main(args) == 0
    before = (root / "split" / "init.parquet").read_bytes()
    assert prepare_deepmath.main(args) == 2  # refuses to overwrite an earlier split
    assert (root / "split" / "init.parquet").read_bytes() == before
    return root / "split"


@pytest.mark.parametrize(
    "family,config", [("qwen2", "init_qwen2.5_7b_gift.yaml"), ("llama", "init_llama3.1_8b_gift.yaml")]
)
def test_paper_init_config_runs(deepmath, tmp_path, family, config):
    model = tmp_path / "model"
    make_tiny_model_dir(model, family)
    argv = [
        "--config",
        str(CONFIGS / config),
        "--workdir",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
        "--set",
        f"model.path={model}",
        "--set",
        f"data.train_file={deepmath / 'init.parquet'}",
        "--set",
        f"data.val_file={deepmath / 'val.parquet'}",
        "--set",
        "data.max_length=96",
        "--set",
        "train.global_batch=16",
        "--set",
        "train.micro_batch_per_device=1",
        "--set",
        "loss.chunk_size=32",
    ]
    assert init_stage.main(argv) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["dtype"] == "bfloat16" and saved["model"]["remat"] is True
    assert saved["loss"]["beta"] == 20.0 and saved["optim"]["lr"] == 1e-5
    assert (tmp_path / "run" / "hf_best" / "config.json").exists()


@pytest.mark.parametrize(
    "config, extra",
    [
        ("rl_paper_grpo.yaml", []),
        # A random model answers nothing right: dynamic sampling draws every round and trains on none.
        ("rl_dapo.yaml", ["--set", "reward.overlong_buffer=4", "--set", "algo.max_sampling_rounds=2"]),
    ],
)
def test_paper_rl_config_runs(deepmath, tmp_path, config, extra):
    model = tmp_path / "model"
    make_tiny_model_dir(model, "qwen2")
    argv = [
        "--config",
        str(CONFIGS / config),
        *extra,
        "--workdir",
        str(tmp_path / "rl"),
        "--max-steps",
        "1",
        "--set",
        f"model.path={model}",
        "--set",
        f"model.base_path={model}",
        "--set",
        f"data.train_file={deepmath / 'rl.parquet'}",
        "--set",
        f"data.val_file={deepmath / 'val_problems.parquet'}",
        "--set",
        "data.val_limit=4",
        "--set",
        "rollout.max_new_tokens=16",
        "--set",
        "train.prompts_per_step=8",
        "--set",
        "algo.mini_batch_prompts=4",
        "--set",
        "train.eval_every=1",
        "--set",
        "reward.num_workers=1",
        "--set",
        "algo.chunk_size=16",
    ]
    assert rl_stage.main(argv) == 0
    lines = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert any("val/avg@4" in line for line in lines)
    assert any("train/reward_mean" in line for line in lines)
    assert any("train/mismatch_kl_k3" in line for line in lines)
    if config == "rl_dapo.yaml":
        saved = json.loads((tmp_path / "rl" / "config.json").read_text())
        assert saved["algo"]["dynamic_sampling"] is True and saved["algo"]["clip_high"] == 0.28
        assert any("train/rollout_is_weight_mean" in line and "train/sampling_rounds" in line for line in lines)
