"""Ground truths are checked when data is read: a malformed one names its file and row."""

import json

import pytest

from gift_jax.data.records import DataFormatError, read_records
from gift_jax.evaluation.benchmarks import load_benchmark
from gift_jax.rewards import check_ground_truth


@pytest.mark.parametrize(
    "ground_truth",
    [
        "1/2",
        "\\boxed{\\frac{1}{2}}",
        "\\{1, 2\\}",
        "\\boxed{1}, \\boxed{2}",
        "\\left\\{ x \\right\\}",
    ],
)
def test_well_formed_math_ground_truths_pass(ground_truth):
    check_ground_truth(ground_truth)


@pytest.mark.parametrize(
    "ground_truth, message",
    [
        ("\\boxed{3", "unterminated"),
        ("", "empty ground-truth"),
        ("\\boxed{}", "empty ground-truth"),
        ("\\frac{1}{2", "1 '{' never closed"),
        ("x}", "closes nothing"),
    ],
)
def test_malformed_math_ground_truths_are_named(ground_truth, message):
    with pytest.raises(ValueError, match=message):
        check_ground_truth(ground_truth, where="set.jsonl: row 4")
    with pytest.raises(ValueError, match="set.jsonl: row 4"):
        check_ground_truth(ground_truth, where="set.jsonl: row 4")


def test_multiple_choice_ground_truths():
    check_ground_truth("(C)", kind="multiple_choice")
    with pytest.raises(ValueError, match="no option letter"):
        check_ground_truth("42", kind="multiple_choice")
    with pytest.raises(ValueError, match="unknown ground-truth kind"):
        check_ground_truth("1", kind="code")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_rl_prompt_reader_rejects_a_malformed_answer(tmp_path):
    path = _write_jsonl(
        tmp_path / "rl.jsonl", [{"prompt": "p0", "answer": "\\boxed{2}"}, {"prompt": "p1", "answer": "\\boxed{3"}]
    )
    # As the RL stage reads its prompts: the answer key checked as ground truths of the reward's kind.
    with pytest.raises(DataFormatError, match=r"rl\.jsonl: row 1 \(0-based\), key 'answer'.*unterminated"):
        read_records(path, ("prompt", "answer"), ground_truth_key="answer", ground_truth_kind="math")
    with pytest.raises(DataFormatError, match=r"rl\.jsonl: row 0 \(0-based\), key 'answer'.*no option letter"):
        read_records(path, ("prompt", "answer"), ground_truth_key="answer", ground_truth_kind="multiple_choice")
    # The generic reader checks only when asked, so SFT solutions are read as they are.
    assert len(read_records(path, ("prompt", "answer"))) == 2


def test_benchmark_reader_rejects_a_malformed_answer(tmp_path):
    path = _write_jsonl(
        tmp_path / "bench.jsonl", [{"problem": "q0", "answer": "1"}, {"problem": "q1", "answer": "\\frac{1}{2"}]
    )
    with pytest.raises(ValueError, match=r"bench\.jsonl row 1 .*unbalanced braces"):
        load_benchmark(path)
    assert [p.answer for p in load_benchmark(path, limit=1)] == ["1"]
