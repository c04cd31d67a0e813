"""`prepare_deepmath.py`: duplicate questions are dropped before the split, so no question is in two sets."""

import pyarrow as pa
import pyarrow.parquet as pq

from experiments import prepare_deepmath


def _row(question, answer="3"):
    return {"question": question, "final_answer": answer, "r1_solution_1": f"<think>...</think> \\boxed{{{answer}}}"}


def test_duplicates_are_dropped_before_the_split_and_counted(tmp_path, capsys):
    rows = [_row(f"What is {a} + {a + 1}?", str(2 * a + 1)) for a in range(20)]
    rows += [
        _row("what is 0 +  1?", "1"),  # case and whitespace differ: the same question
        _row("What is 1 + 2?\n", "3"),
        _row("What is 2 + 3?", "6"),  # the same question with another answer: dropped too (the first is kept)
        _row("Ｗhat is 3 + 4?", "7"),  # a full-width letter: NFKC makes it the same
    ]
    (tmp_path / "source").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:12]), tmp_path / "source" / "train-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[12:]), tmp_path / "source" / "train-00001.parquet")
    args = ["--source", str(tmp_path / "source"), "--out", str(tmp_path / "split"), "--init", "8", "--rl", "8"]
    assert prepare_deepmath.main([*args, "--val", "4"]) == 0
    out = capsys.readouterr().out
    assert "dropped 4 duplicate question(s)" in out and "1 of them with a different answer" in out
    first = {q["question"]: q["final_answer"] for q in rows[:20]}  # the copies kept: the first in file order
    kept = []
    for name, question_column in (("init", "sft_prompt"), ("rl", "prompt"), ("val", "sft_prompt")):
        table = pq.read_table(tmp_path / "split" / f"{name}.parquet")
        kept += list(zip(table.column(question_column).to_pylist(), table.column("answer").to_pylist()))
    assert sorted(kept) == sorted(first.items())  # 8 + 8 + 4 distinct questions, each with its first answer


def test_too_few_distinct_questions_names_the_sizes(tmp_path, capsys):
    (tmp_path / "source").mkdir()
    pq.write_table(pa.Table.from_pylist([_row("Same?")] * 10), tmp_path / "source" / "a.parquet")
    args = ["--source", str(tmp_path / "source"), "--out", str(tmp_path / "split")]
    assert prepare_deepmath.main([*args, "--init", "4", "--rl", "4", "--val", "1"]) == 2
    assert (
        "1 usable rows with distinct questions, but --init 4 + --rl 4 + --val 1 = 9 are needed"
        in capsys.readouterr().err
    )
