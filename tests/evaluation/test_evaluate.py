"""End to end: `experiments/evaluate.py` on a checkpoint whose answer distribution is known exactly."""

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.evaluate import main as evaluate_main
from gift_jax.data import load_tokenizer
from gift_jax.evaluation.evaluate import parse_named_paths, pass_ks, response_texts
from gift_jax.rollout import SampleResult
from tests.rollout.designed_model import (
    bigram_model,
    chain,
    save_with_tokenizer,
    token_ids,
)

TEMPERATURE, K, NUM_PROBLEMS = 0.6, 8, 8
# After "\boxed{" the model writes 5, 3 or B with probabilities .5 / .25 / .25, then "}" and EOS.
BRANCH = {"5": 0.5, "3": 0.25, "B": 0.25}


def _tempered(probs):
    p = np.asarray(list(probs)) ** (1 / TEMPERATURE)
    return p / p.sum()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    box, close, eos = token_ids("\\boxed{"), token_ids("}")[0], 2
    successors = chain(box, {token_ids(t)[0]: p for t, p in BRANCH.items()})
    successors.update({token_ids(t)[0]: {close: 1.0} for t in BRANCH})
    successors[close] = {eos: 1.0}
    model, config = bigram_model(successors, {box[0]: 1.0}, vocab_size=320)
    return save_with_tokenizer(model, config, tmp_path_factory.mktemp("designed"))


@pytest.fixture(scope="module")
def benchmark_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmarks")
    math_rows = [{"problem": f"What is {i} + {5 - i}?", "answer": "5"} for i in range(NUM_PROBLEMS)]
    choice_rows = [
        {"question": f"Pick option {i}.", "choices": ["one", "two", "three"], "answerKey": "B"}
        for i in range(NUM_PROBLEMS)
    ]
    for name, rows in (("math", math_rows), ("choice", choice_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.mark.slow  # samples 2 benchmarks x 8 problems x k=8 end to end
def test_evaluate_script_reports_known_accuracies(model_dir, benchmark_files, tmp_path):
    out = tmp_path / "eval"
    evaluate_main(
        [
            "--model",
            str(model_dir),
            "--benchmarks",
            f"math={benchmark_files / 'math.jsonl'}",
            f"choice={benchmark_files / 'choice.jsonl'}",
            "--k",
            str(K),
            "--temperature",
            str(TEMPERATURE),
            "--max-new-tokens",
            "12",
            "--dtype",
            "float32",
            "--out",
            str(out),
            "--save-samples",
            "--no-progress",
        ]
    )
    results = json.loads((out / "results.json").read_text())["benchmarks"]
    tempered = dict(zip(BRANCH, _tempered(BRANCH.values())))
    entropy = -sum(p * np.log(p) for p in tempered.values())
    for name, expected in (("math", tempered["5"]), ("choice", tempered["B"])):
        metrics = results[name]
        assert metrics["num_problems"] == NUM_PROBLEMS and metrics["num_samples"] == K
        passes = [metrics[f"pass@{k}"] for k in (1, 2, 4, 8)]
        assert passes == sorted(passes) and passes[-1] > passes[0]  # more tries, more solved
        assert metrics["pass@1"] == pytest.approx(metrics[f"avg@{K}"])
        sigma = np.sqrt(expected * (1 - expected) / (NUM_PROBLEMS * K))
        assert abs(metrics[f"avg@{K}"] - expected) < 4 * sigma
        # Every response is "\boxed{X}" + EOS: 6 tokens, one of them drawn with entropy `entropy`.
        assert metrics["mean_response_tokens"] == 6 and metrics["truncated_fraction"] == 0
        assert metrics["mean_token_entropy"] == pytest.approx(entropy / 6, abs=1e-4)
        assert metrics["score_failures"] == 0

        samples = [json.loads(line) for line in (out / f"samples_{name}.jsonl").read_text().splitlines()]
        assert len(samples) == NUM_PROBLEMS
        for record in samples:
            assert set(record["responses"]) <= {"\\boxed{5}", "\\boxed{3}", "\\boxed{B}"}
            truth = "\\boxed{5}" if name == "math" else "\\boxed{B}"
            assert record["correct"] == [r == truth for r in record["responses"]]
    table = (out / "results.md").read_text()
    assert table.startswith("| benchmark | problems | avg@8 | pass@1 | pass@2 | pass@4 | pass@8 |")
    assert "| mean |" in table


def test_helpers_pass_ks_named_paths_and_response_texts(model_dir):
    assert pass_ks(4) == [1, 2, 4] and pass_ks(6) == [1, 2, 4] and pass_ks(1) == [1]
    assert parse_named_paths(["a=x/1.jsonl", "b=2=3"]) == {"a": Path("x/1.jsonl"), "b": Path("2=3")}
    for bad, message in ((["a"], "expected NAME=PATH"), (["a=1", "a=2"], "given twice")):
        with pytest.raises(ValueError, match=message):
            parse_named_paths(bad)
    tokenizer = load_tokenizer(model_dir)
    boxed_five, eos, pad = token_ids("\\boxed{5}"), tokenizer.eos_id, tokenizer.pad_id
    five = token_ids("5")[0]
    ids = np.array([boxed_five + [eos, pad], boxed_five + [five, five], [eos] + [pad] * 6])
    # Row 0 stopped on EOS, row 1 was cut at the 7-token budget, row 2 stopped at once.
    result = SampleResult(None, None, ids, None, np.array([6, 7, 1]), np.array([False, True, False]), None, None)
    assert response_texts(result, tokenizer) == ["\\boxed{5}", "\\boxed{5}55", ""]
