"""Reads string records from local parquet or jsonl files.

Both the SFT data (official columns `sft_prompt` / `solution`) and the RL / evaluation prompts
(e.g. `prompt` / `answer`) are flat tables of strings; which columns to read is always passed in.
Every problem with the input is reported as `DataFormatError` naming the file and the key, row or
line, so a bad file is fixed at its source instead of being debugged inside the trainer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from gift_jax.errors import InputError
from gift_jax.rewards.ground_truth import check_ground_truth

SUPPORTED_SUFFIXES = (".parquet", ".jsonl")


class DataFormatError(InputError):
    """An input data file is malformed (message names the file and the key / row / line)."""


def read_records(
    path: str | os.PathLike,
    keys: Sequence[str],
    *,
    ground_truth_key: str | None = None,
    ground_truth_kind: str = "math",
) -> list[dict[str, str]]:
    """Reads the string columns `keys` of a `.parquet` or `.jsonl` file.

    Args:
      path: the file; its suffix picks the reader.
      keys: column names (parquet) or object keys (jsonl) to read; other columns are ignored.
      ground_truth_key: if set, the key (one of `keys`) holding reward ground truths, each checked
        with `gift_jax.rewards.check_ground_truth` as `ground_truth_kind` ("math" or
        "multiple_choice"), so a malformed one fails here rather than in the middle of a run.

    Returns:
      One dict `{key: value}` per row, in file order (row i of the file is element i).

    Raises:
      FileNotFoundError: the file does not exist.
      DataFormatError: unknown suffix, a missing key, a value that is not a string, no rows at all,
        or (jsonl) a line that is not valid UTF-8 / JSON / a JSON object, or a malformed
        ground truth.
    """
    path = Path(path)
    keys = tuple(keys)
    if not keys:
        raise ValueError(f"{path}: read_records needs at least one key to read")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file (wanted keys {list(keys)})")
    if path.suffix == ".parquet":
        records = _read_parquet(path, keys)
    elif path.suffix == ".jsonl":
        records = _read_jsonl(path, keys)
    else:
        raise DataFormatError(
            f"{path}: unsupported data file suffix {path.suffix!r}; expected one of {SUPPORTED_SUFFIXES}"
        )
    if not records:
        raise DataFormatError(f"{path}: the file has no rows")
    if ground_truth_key is not None:
        _check_ground_truths(path, records, ground_truth_key, ground_truth_kind)
    return records


def _check_ground_truths(path: Path, records: list[dict[str, str]], key: str, kind: str) -> None:
    for row, record in enumerate(records):
        try:
            check_ground_truth(record[key], kind=kind, where=f"{path}: row {row} (0-based), key {key!r}")
        except ValueError as error:
            raise DataFormatError(str(error)) from error


def _read_parquet(path: Path, keys: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        available = pq.read_schema(path).names
    except Exception as error:  # pyarrow raises several types for a file that is not parquet
        raise DataFormatError(f"{path}: not a readable parquet file ({error})") from error
    missing = [key for key in keys if key not in available]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; the file has columns {available}")
    table = pq.read_table(path, columns=list(keys))
    columns = {key: table.column(key).to_pylist() for key in keys}
    for key, values in columns.items():
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise DataFormatError(
                    f"{path}: row {row} (0-based), column {key!r}: expected a string, got {type(value).__name__}"
                )
    return [{key: columns[key][row] for key in keys} for row in range(table.num_rows)]


def _read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict[str, str]]:
    records = []
    # Bytes first, then strict per-line decoding: the error can then name the line, which a
    # text-mode open() would not.
    for line_number, raw_line in enumerate(path.read_bytes().split(b"\n"), start=1):
        where = f"{path}: line {line_number}"
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataFormatError(f"{where}: invalid UTF-8 at byte {error.start} of the line") from error
        if not line.strip():
            continue  # blank lines (e.g. the final newline) hold no record
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from error
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        row = len(records)
        record = {}
        for key in keys:
            if key not in obj:
                raise DataFormatError(f"{where} (row {row}): missing key {key!r}; the object has keys {sorted(obj)}")
            value = obj[key]
            if not isinstance(value, str):
                raise DataFormatError(
                    f"{where} (row {row}), key {key!r}: expected a string, got {type(value).__name__}"
                )
            record[key] = value
        records.append(record)
    return records
