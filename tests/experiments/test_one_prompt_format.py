"""One prompt format from data to evaluation: the same prompt text reaches the init stage's batch, the RL
rollouts, RL validation and `evaluate.py` for one checkpoint, and each run records it."""

import json

import numpy as np
import pytest

from experiments import evaluate, init_stage, rl_stage
from gift_jax.config_io import load_config
from gift_jax.data import PromptFormat, load_tokenizer, make_sft_iterator
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import _data_splits
from tests.helpers import make_tiny_model_dir

pytestmark = pytest.mark.slow  # an init run, an RL run and an evaluation (about a minute)

QUESTION = "What is 2 + 3?"
PROMPT = {"model.prompt.instruction": "Reason, then box the answer.", "model.prompt.system_prompt": "Add numbers."}
# The tiny model folder's Qwen-style template: a system turn, the user turn, then the generation prompt.
CHAT_PROMPT = (
    "<|im_start|>system\nAdd numbers.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2 + 3?\n\nReason, then box the answer.<|im_end|>\n<|im_start|>assistant\n"
)


def _sets(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt")
    make_tiny_model_dir(root / "model")
    demos = _jsonl(root / "init.jsonl", [{"sft_prompt": QUESTION, "solution": "2 + 3 = 5. \\boxed{5}"}] * 16)
    problems = _jsonl(root / "problems.jsonl", [{"prompt": QUESTION, "answer": "5"}] * 8)
    init = {
        "model.path": root / "model",
        "data.train_file": demos,
        "data.max_length": 96,
        "data.num_threads": 0,
        "train.global_batch": 16,
        "train.micro_batch_per_device": 1,
        "train.max_steps": 1,
        "loss.chunk_size": 32,
        **PROMPT,
    }
    assert init_stage.main(["--workdir", str(root / "init"), *_sets(init)]) == 0
    rl = {
        "model.path": root / "init" / "hf_final",
        "data.train_file": problems,
        "data.val_file": problems,
        "data.val_limit": 2,
        "rollout.group_size": 4,
        "rollout.max_new_tokens": 8,
        "algo.mini_batch_prompts": 2,
        "algo.chunk_size": 16,
        "train.prompts_per_step": 2,
        "train.micro_batch_per_device": 1,
        "train.max_steps": 1,
        "train.eval_k": 2,
        "train.dump_rollouts_every": 1,
        "train.dump_rollouts_rows": 4,
        "reward.num_workers": 1,
        **PROMPT,
    }
    assert rl_stage.main(["--workdir", str(root / "rl"), *_sets(rl)]) == 0
    return root, init


def test_the_init_batch_holds_the_prompt(runs):
    root, init = runs
    config = load_config(InitStageConfig, None, [f"{k}={v}" for k, v in init.items()])
    _, train, _ = _data_splits(config, root / "init")  # the trainer's own data path (the prepared dataset)
    batch = next(iter(make_sft_iterator(train, batch_size=4, seed=0, num_epochs=1, num_threads=0)))
    prompt_length = int(np.argmax(batch["loss_mask"][0])) + 1  # the first supervised target follows the prompt
    tokenizer = load_tokenizer(root / "model")
    assert tokenizer.decode(batch["input_ids"][0, :prompt_length].tolist()) == CHAT_PROMPT


def test_rl_rollouts_and_validation_see_the_same_prompt(runs):
    root, _ = runs
    rollouts = [json.loads(line) for line in (root / "rl" / "rollouts" / "step_000001.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4 and {row["chat_prompt"] for row in rollouts} == {CHAT_PROMPT}
    assert set(rollouts[0]) >= {"prompt", "completion", "reward", "length", "truncated", "advantage"}
    assert sum(row["advantage"] for row in rollouts) == pytest.approx(0.0, abs=1e-6)  # one group: centred
    validation = [
        json.loads(line) for line in (root / "rl" / "rollouts" / "val_step_000001.jsonl").read_text().splitlines()
    ]
    assert len(validation) == 2 and {row["chat_prompt"] for row in validation} == {CHAT_PROMPT}
    assert len(validation[0]["completions"]) == len(validation[0]["correct"]) == 2


def test_evaluate_defaults_to_the_checkpoints_prompt_and_warns_otherwise(runs, tmp_path, capsys):
    root, _ = runs
    export = root / "rl" / "hf_final"
    recorded = json.loads((export / "prompt_format.json").read_text())
    assert PromptFormat(recorded["instruction"], recorded["system_prompt"]) == PromptFormat(
        "Reason, then box the answer.", "Add numbers."
    )
    bench = _jsonl(tmp_path / "bench.jsonl", [{"problem": QUESTION, "answer": "5"}] * 2)
    common = ["--k", "2", "--max-new-tokens", "8", "--dtype", "float32", "--no-progress", "--save-samples"]
    assert (
        evaluate.main(["--model", str(export), "--benchmarks", f"b={bench}", "--out", str(tmp_path / "a"), *common])
        == 0
    )
    assert "WARNING" not in capsys.readouterr().err
    [sample] = [json.loads(line) for line in (tmp_path / "a" / "samples_b.jsonl").read_text().splitlines()][:1]
    assert sample["chat_prompt"] == CHAT_PROMPT
    info = json.loads((tmp_path / "a" / "results.json").read_text())["run"]["prompt"]
    assert (
        info["math_instructions"] == {"b": "Reason, then box the answer."} and info["system_prompt"] == "Add numbers."
    )
    # Told otherwise: evaluated as told, warned, and recorded.
    other = ["--benchmarks", f"b={bench}:instruction=paper", "--system-prompt", "none", "--out", str(tmp_path / "p")]
    assert evaluate.main(["--model", str(export), *other, *common]) == 0
    err = capsys.readouterr().err
    assert "WARNING: benchmark b: math problems end in 'Please reason step by step" in err
    assert "WARNING: system prompt None; the checkpoint was trained with 'Add numbers.'" in err
    assert json.loads((tmp_path / "p" / "results.json").read_text())["run"]["prompt"]["warnings"]
