"""Reading parquet / jsonl records, and the error for each kind of bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gift_jax.data.records import DataFormatError, read_records

ROWS = [
    {"sft_prompt": "What is 1+1?", "solution": "It is \\boxed{2}.", "extra": 7},
    {"sft_prompt": "Ünïcode ✓ prompt", "solution": "Line one\nline two", "extra": 8},
]


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("writer, suffix", [(write_parquet, ".parquet"), (write_jsonl, ".jsonl")])
def test_reads_selected_keys_in_file_order(tmp_path, writer, suffix):
    path = writer(tmp_path / f"data{suffix}", ROWS)
    records = read_records(path, ("sft_prompt", "solution"))
    assert records == [{"sft_prompt": r["sft_prompt"], "solution": r["solution"]} for r in ROWS]


def test_prompt_answer_records_under_any_key_names_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "rl.jsonl", [{"question": "q0", "final": "1"}, {"question": "q1", "final": "2"}])
    problems = read_records(path, ("question", "final"), ground_truth_key="final")  # as the RL stage reads
    assert problems == [{"question": "q0", "final": "1"}, {"question": "q1", "final": "2"}]


def test_blank_lines_in_jsonl_are_skipped(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"a": "x"}\n\n   \n{"a": "y"}\n')
    assert read_records(path, ["a"]) == [{"a": "x"}, {"a": "y"}]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_records(tmp_path / "nope.parquet", ["sft_prompt"])


@pytest.mark.parametrize("writer, suffix", [(write_parquet, ".parquet"), (write_jsonl, ".jsonl")])
def test_missing_column_names_file_and_column(tmp_path, writer, suffix):
    path = writer(tmp_path / f"data{suffix}", ROWS)
    with pytest.raises(DataFormatError, match=rf"data\{suffix}.*'answer'"):
        read_records(path, ("sft_prompt", "answer"))


def test_non_string_parquet_value_names_row_and_column(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [{"p": "a", "s": "x"}, {"p": "b", "s": None}])
    with pytest.raises(DataFormatError, match=r"d\.parquet: row 1 .*'s'.*NoneType"):
        read_records(path, ("p", "s"))
    with pytest.raises(DataFormatError, match=r"row 0 .*'extra'.*int"):
        read_records(write_parquet(tmp_path / "e.parquet", ROWS), ("extra",))


def test_non_string_jsonl_value_names_line_and_key(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"p": "a", "s": "x"}\n{"p": "b", "s": 3}\n')
    with pytest.raises(DataFormatError, match=r"d\.jsonl: line 2 \(row 1\), key 's'.*int"):
        read_records(path, ("p", "s"))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_empty_file_is_an_error(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"p": pa.array([], pa.string())}), path)
    else:
        path.write_text("\n")
    with pytest.raises(DataFormatError, match="no rows"):
        read_records(path, ["p"])


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"p": "ok"}\n{"p": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: line 2: invalid UTF-8"):
        read_records(path, ["p"])


def test_invalid_json_and_non_object_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"p": "ok"}\n{"p": \n')
    with pytest.raises(DataFormatError, match=r"line 2: invalid JSON"):
        read_records(path, ["p"])
    path.write_text('["p"]\n')
    with pytest.raises(DataFormatError, match=r"line 1: expected a JSON object, got list"):
        read_records(path, ["p"])


def test_unsupported_suffix_and_corrupt_parquet(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("p\nx\n")
    with pytest.raises(DataFormatError, match="unsupported data file suffix '.csv'"):
        read_records(csv, ["p"])
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(DataFormatError, match=r"fake\.parquet: not a readable parquet file"):
        read_records(fake, ["p"])
