"""The toy pipeline and `experiments/evaluate.py` evaluate through one path and agree exactly.

The shipped toy base and a toy-world eval file: the pipeline's `evaluate` and the script (with the
spec's instruction `none`, the pipeline's seed and float32) must give identical numbers; with the
paper's instruction, which the toy tokenizer cannot encode, the script must refuse, naming the file
and row instead of scoring garbage.
"""

import dataclasses
import json

import pytest

from experiments import pipeline
from experiments.evaluate import main as evaluate_main
from gift_jax.evaluation.benchmarks import BenchmarkSpec
from gift_jax.evaluation.checkpoint_eval import EvalInputError, evaluate_checkpoint, load_eval_model
from gift_jax.evaluation.evaluate import EvalConfig
from gift_jax.rewards import RewardScorer
from gift_jax.toy import toy_eval, write_world
from gift_jax.toy.presets import PRESETS

SEED, PROBLEMS = 3, 16
PRESET = dataclasses.replace(PRESETS["smoke"], eval_problems=PROBLEMS, pass_k_samples=4, avg_k=4)


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    sizes = dict(pretrain=8, expert=8, expert_val=8, rl_prompts=8, eval=PROBLEMS)
    return write_world(tmp_path_factory.mktemp("world"), sizes=sizes)["eval"]


def _script(eval_file, out, *, k, temperature, instruction=":instruction=none"):
    """evaluate.py's results for the toy benchmark, or its exit status when it refuses."""
    status = evaluate_main(
        [
            "--model",
            str(pipeline.SHIPPED_BASE),
            "--benchmarks",
            f"toy={eval_file}{instruction}",
            "--k",
            str(k),
            "--temperature",
            str(temperature),
            "--max-new-tokens",
            str(PRESET.rl_max_new_tokens),
            "--seed",
            str(SEED),
            "--dtype",
            "float32",
            "--limit",
            str(PROBLEMS),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    return status if status else json.loads((out / "results.json").read_text())["benchmarks"]["toy"]


@pytest.mark.slow  # ~40-60 s on 2 CPU cores: four sampler compilations on two meshes
def test_pipeline_and_evaluate_script_give_the_same_numbers(eval_file, tmp_path):
    spec = BenchmarkSpec("toy_eval", eval_file, instruction=None, limit=PROBLEMS)
    scorer = RewardScorer(num_workers=1)
    try:
        ours = toy_eval.evaluate(pipeline.SHIPPED_BASE, spec, PRESET, SEED, scorer)
    finally:
        scorer.close()
    protocol = _script(eval_file, tmp_path / "avg", k=PRESET.avg_k, temperature=0.6)
    explore = _script(eval_file, tmp_path / "pass", k=PRESET.pass_k_samples, temperature=1.0)
    assert protocol["avg@4"] == ours["avg@4"]
    for k in (1, 2, 4):
        assert explore[f"pass@{k}"] == ours[f"pass@{k}"]
    # Entropy over every sampled token: equal only if every sample is the same token for token (up
    # to float rounding: the script shards the batch over the 8 test devices, the pipeline does not).
    assert explore["mean_token_entropy"] == pytest.approx(ours["mean_token_entropy"], rel=1e-6)
    assert ours["mean_token_entropy"] > 0


def test_the_paper_instruction_on_the_toy_world_is_refused_naming_file_and_row(eval_file, tmp_path, capsys):
    # The shipped base has no prompt record: its prompt is the project default, an English sentence.
    assert _script(eval_file, tmp_path / "bad", k=1, temperature=0.6, instruction="") == 2
    err = capsys.readouterr().err
    assert f"{eval_file}: row 0" in err and "'<unk>'" in err and f"{PROBLEMS} of {PROBLEMS} rows" in err
    assert "Please reason step by step" in err and "instruction=none" in err


def test_evaluate_checkpoint_names_bad_inputs(eval_file, tmp_path):
    config = EvalConfig(num_samples=1, max_new_tokens=4)
    with pytest.raises(EvalInputError, match="missing.jsonl"):
        evaluate_checkpoint(pipeline.SHIPPED_BASE, [BenchmarkSpec("x", tmp_path / "missing.jsonl")], config)
    with pytest.raises(EvalInputError, match="is a model folder"):
        evaluate_checkpoint(pipeline.SHIPPED_BASE, [BenchmarkSpec("x", eval_file, None)], config, step=3)
    loaded = load_eval_model(pipeline.SHIPPED_BASE)
    assert loaded.checkpoint is None and loaded.chat_template is None
