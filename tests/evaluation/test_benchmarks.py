"""Each benchmark layout read from tiny jsonl / json / parquet files written in tmp_path."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gift_jax.evaluation.benchmarks import (
    DEFAULT_MATH_INSTRUCTION,
    BenchmarkSpec,
    format_multiple_choice,
    load_benchmark,
    parse_benchmark_specs,
)


def _write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return path


def _write_json(path, records):
    path.write_text(json.dumps(records))
    return path


def _write_parquet(path, records):
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def test_gsm8k_takes_the_number_after_the_last_marker(tmp_path):
    path = _write_jsonl(
        tmp_path / "gsm8k.jsonl",
        [
            {"question": "Ann has 2 apples ...", "answer": "2 + 40 = 42\n#### 42"},
            {"question": "How many cents ...", "answer": "so 1,250 cents\n#### 1,250"},
        ],
    )
    problems = load_benchmark(path)
    assert [p.answer for p in problems] == ["42", "1250"]
    assert problems[0].kind == "math"
    assert problems[0].prompt == "Ann has 2 apples ...\n\n" + DEFAULT_MATH_INSTRUCTION
    assert problems[0].meta["layout"] == "gsm8k"
    assert problems[0].meta["benchmark"] == "gsm8k"


def test_math500_from_parquet_keeps_extra_fields(tmp_path):
    path = _write_parquet(
        tmp_path / "math500.parquet",
        [
            {
                "problem": "Compute $1/2 + 1/4$.",
                "solution": "... \\boxed{\\frac{3}{4}}",
                "answer": "\\frac{3}{4}",
                "subject": "Algebra",
                "level": 2,
                "unique_id": "test/1.json",
            },
        ],
    )
    [problem] = load_benchmark(path, math_instruction=None)
    assert problem.prompt == "Compute $1/2 + 1/4$."
    assert problem.answer == "\\frac{3}{4}"
    assert problem.meta["fields"]["subject"] == "Algebra"
    assert problem.meta["fields"]["level"] == 2
    assert "answer" not in problem.meta["fields"]


def test_solution_only_layout_reads_the_last_boxed_with_nested_braces(tmp_path):
    path = _write_jsonl(
        tmp_path / "math.jsonl",
        [
            {"problem": "p", "solution": "first \\boxed{1}, then \\boxed{\\frac{1}{\\sqrt{2}}}."},
            {"problem": "q", "solution": "no box here"},
        ],
    )
    assert load_benchmark(path, limit=1)[0].answer == "\\frac{1}{\\sqrt{2}}"
    with pytest.raises(ValueError, match=r"math.jsonl row 1 \(boxed layout\).*no complete"):
        load_benchmark(path)


def test_aime_capitalised_keys_and_integer_answers(tmp_path):
    path = _write_jsonl(
        tmp_path / "aime24.jsonl",
        [
            {"ID": "2024-I-1", "Problem": "Find m+n.", "Answer": 204},
            {"ID": "2024-I-2", "Problem": "Find x.", "Answer": "025"},
        ],
    )
    problems = load_benchmark(path)
    assert [p.answer for p in problems] == ["204", "025"]
    assert problems[0].meta["fields"] == {"ID": "2024-I-1"}


def test_olympiadbench_final_answer_lists(tmp_path):
    path = _write_json(
        tmp_path / "olympiad.json",
        [
            {"id": 1, "question": "Find all x.", "final_answer": ["$3$", "$5$"], "unit": None},
            {"id": 2, "question": "Find y.", "final_answer": ["$\\frac{1}{2}$"]},
        ],
    )
    problems = load_benchmark(path)
    assert [p.answer for p in problems] == ["3, 5", "\\frac{1}{2}"]
    assert problems[0].meta["layout"] == "final_answer"


def test_gpqa_is_shuffled_deterministically(tmp_path):
    records = [
        {
            "Question": f"Which particle number {i}?",
            "Correct Answer": " right ",
            "Incorrect Answer 1": "wrong 1",
            "Incorrect Answer 2": "wrong 2",
            "Incorrect Answer 3": "wrong 3",
            "Subdomain": "Physics",
        }
        for i in range(8)
    ]
    path = _write_jsonl(tmp_path / "gpqa_diamond.jsonl", records)
    problems = load_benchmark(path)
    for problem in problems:
        assert problem.kind == "multiple_choice"
        assert sorted(problem.meta["options"]) == ["right", "wrong 1", "wrong 2", "wrong 3"]
        assert problem.meta["options"]["ABCD".index(problem.answer)] == "right"
        assert f"{problem.answer}. right" in problem.prompt
    assert len({p.answer for p in problems}) > 1  # the correct answer is not always "A"
    assert [p.answer for p in load_benchmark(path)] == [p.answer for p in problems]
    reseeded = [p.answer for p in load_benchmark(path, shuffle_seed=1)]
    assert reseeded != [p.answer for p in problems]


def test_mmlu_pro_options_with_index_or_letter(tmp_path):
    options = [f"option {i}" for i in range(10)]
    path = _write_parquet(
        tmp_path / "mmlu_pro.parquet",
        [
            {
                "question_id": 7,
                "question": "Q?",
                "options": options,
                "answer": "C",
                "answer_index": 2,
                "category": "law",
            },
        ],
    )
    [problem] = load_benchmark(path)
    assert problem.answer == "C"
    assert problem.prompt == format_multiple_choice("Q?", options)
    assert "J. option 9" in problem.prompt and "(A-J)" in problem.prompt
    letter_only = _write_jsonl(
        tmp_path / "mmlu_pro_letters.jsonl", [{"question": "Q?", "options": options, "answer": "h"}]
    )
    assert load_benchmark(letter_only)[0].answer == "H"


def test_mmlu_redux_integer_answers(tmp_path):
    path = _write_jsonl(
        tmp_path / "mmlu_redux.jsonl",
        [
            {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "error_type": "ok"},
        ],
    )
    [problem] = load_benchmark(path)
    assert problem.answer == "B"
    assert problem.prompt.splitlines()[:6] == ["2+2?", "", "A. 3", "B. 4", "C. 5", "D. 6"]


@pytest.mark.parametrize(
    "labels, answer_key, expected",
    [
        (["A", "B", "C", "D"], "D", "D"),
        (["1", "2", "3", "4"], "2", "B"),  # some ARC items use digit labels
    ],
)
def test_arc_label_mappings(tmp_path, labels, answer_key, expected):
    path = _write_parquet(
        tmp_path / "arc_challenge.parquet",
        [
            {
                "id": "Mercury_1",
                "question": "Which is a metal?",
                "choices": {"text": ["wood", "iron", "glass", "salt"], "label": labels},
                "answerKey": answer_key,
            },
        ],
    )
    [problem] = load_benchmark(path)
    assert problem.answer == expected
    assert problem.meta["answer_index"] == "ABCD".index(expected)


def test_custom_fields(tmp_path):
    path = _write_jsonl(
        tmp_path / "custom.jsonl",
        [
            {"prompt_text": "What is 6*7?", "gold": 42},
            {"prompt_text": "Pick one", "gold": "B", "opts": ["x", "y"]},
        ],
    )
    [math_problem] = load_benchmark(path, problem_field="prompt_text", answer_field="gold", limit=1)
    assert (math_problem.answer, math_problem.kind) == ("42", "math")
    [choice] = load_benchmark(path, problem_field="prompt_text", answer_field="gold", choices_field="opts", offset=1)
    assert (choice.answer, choice.kind, choice.meta["row"]) == ("B", "multiple_choice", 1)
    with pytest.raises(ValueError, match="give both problem_field and answer_field"):
        load_benchmark(path, problem_field="prompt_text")


def test_offset_and_limit_keep_file_rows(tmp_path):
    path = _write_jsonl(tmp_path / "aime25.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(5)])
    problems = load_benchmark(path, offset=1, limit=2, name="AIME25")
    assert [(p.answer, p.meta["row"]) for p in problems] == [("1", 1), ("2", 2)]
    assert problems[0].meta["benchmark"] == "AIME25"


def test_errors_name_the_file_and_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        load_benchmark(tmp_path / "missing.jsonl")
    unknown = _write_jsonl(tmp_path / "unknown.jsonl", [{"text": "hi", "label": 1}])
    with pytest.raises(
        ValueError, match=r"unknown.jsonl: unknown benchmark layout.*'label', 'text'.*Rename the question key"
    ):
        load_benchmark(unknown)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "1"}\n{not json\n')
    with pytest.raises(ValueError, match="broken.jsonl line 2: invalid JSON"):
        load_benchmark(broken)
    missing_key = _write_jsonl(tmp_path / "gaps.jsonl", [{"question": "q", "answer": "1"}, {"question": "r"}])
    with pytest.raises(ValueError, match=r"gaps.jsonl row 1: missing \['answer'\]"):
        load_benchmark(missing_key)
    bad_choice = _write_jsonl(tmp_path / "bad_choice.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(ValueError, match="bad_choice.jsonl row 0.*outside the 2 options"):
        load_benchmark(bad_choice)


def test_benchmark_spec_parses_name_path_and_instruction():
    assert BenchmarkSpec.parse("math=data/m.jsonl") == BenchmarkSpec("math", Path("data/m.jsonl"), "checkpoint")
    spec = BenchmarkSpec.parse("toy=runs/a:b/e.jsonl:instruction=none", limit=5)
    assert spec == BenchmarkSpec("toy", Path("runs/a:b/e.jsonl"), "none", 5)
    # Everything after ":instruction=" is the text, colons and "=" included.
    assert BenchmarkSpec.parse("m=x.jsonl:instruction=Note: a=b.").instruction == "Note: a=b."
    for bad in ("no_equals", "=x.jsonl", "m=", "m=x.jsonl:instruction="):
        with pytest.raises(ValueError):
            BenchmarkSpec.parse(bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_benchmark_specs(["a=x.jsonl", "a=y.jsonl:instruction=none"])


def test_benchmark_spec_instruction_reaches_every_prompt(tmp_path):
    math_path = _write_jsonl(tmp_path / "m.jsonl", [{"problem": "1+1=?", "answer": "2"}])
    choice_path = _write_jsonl(tmp_path / "c.jsonl", [{"question": "Pick.", "choices": ["x", "y"], "answer": "B"}])
    [paper] = BenchmarkSpec("m", math_path, "paper").load()
    assert paper.prompt == "1+1=?\n\n" + DEFAULT_MATH_INSTRUCTION and paper.meta["instruction"] == "paper"
    # The default: the instruction of the checkpoint evaluated (math), the option-letter sentence otherwise.
    [trained] = BenchmarkSpec("m", math_path).load(checkpoint_instruction="Think, then box.")
    assert trained.prompt == "1+1=?\n\nThink, then box." and trained.meta["math_instruction"] == "Think, then box."
    assert BenchmarkSpec("m", math_path).load(checkpoint_instruction=None)[0].prompt == "1+1=?"
    [letter] = BenchmarkSpec("c", choice_path).load(checkpoint_instruction="Think, then box.")
    assert letter.prompt.endswith("on its own.")
    for none in (None, "none"):
        assert BenchmarkSpec("m", math_path, none).load()[0].prompt == "1+1=?"
        assert BenchmarkSpec("c", choice_path, none).load()[0].prompt == "Pick.\n\nA. x\nB. y"
    assert BenchmarkSpec("m", math_path, "Box it.").load()[0].prompt == "1+1=?\n\nBox it."
    [choice] = BenchmarkSpec("c", choice_path, "Answer {first} to {last}.").load()
    assert choice.prompt.endswith("B. y\n\nAnswer A to B.")
