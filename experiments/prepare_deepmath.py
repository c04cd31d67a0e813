"""Splits a local DeepMath-103K copy into the paper's disjoint init / RL / validation files.

    python experiments/prepare_deepmath.py --source /data/DeepMath-103K/data --out /data/deepmath \
        [--init 10000 --rl 10000 --val 1000 --seed 0 --solution-column r1_solution_1]

Reads every *.parquet under --source (columns `question`, `final_answer`, `r1_solution_1..3`) and writes
  init.parquet          sft_prompt, solution, answer   (init stage, the official column names)
  val.parquet           sft_prompt, solution, answer   (validation NLL of the init stage)
  rl.parquet            prompt, answer, solution       (RL prompts; `solution` feeds LUFFY / ReLIFT)
  val_problems.parquet  problem, answer                (avg@k validation during RL)
Rows without a question, answer or solution are skipped (counted). Questions that repeat (the same
text after Unicode NFKC normalisation, case folding and collapsing whitespace) are dropped before the
split, keeping the first in file order, so no question lands in two of the sets (counted, and how many
of the repeats carried a different answer). The split is a seeded permutation (`--seed`, default 0) of
the remaining rows: the first --init rows, the next --rl, the next --val. Existing output files are
never overwritten: pick a fresh --out.
"""

import argparse
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REQUIRED = ("question", "final_answer")


def load_rows(source: Path, solution_column: str) -> list[dict]:
    files = sorted(source.rglob("*.parquet")) if source.is_dir() else [source]
    if not files:
        raise FileNotFoundError(f"{source}: no parquet files")
    rows, skipped = [], 0
    for file in files:
        table = pq.read_table(file)
        missing = [c for c in (*REQUIRED, solution_column) if c not in table.column_names]
        if missing:
            raise ValueError(f"{file}: missing column(s) {missing}; has {table.column_names}")
        for row in table.select([*REQUIRED, solution_column]).to_pylist():
            values = [row[c] for c in (*REQUIRED, solution_column)]
            if not all(isinstance(v, str) and v.strip() for v in values):
                skipped += 1
                continue
            rows.append({"question": values[0], "answer": values[1], "solution": values[2]})
    print(f"read {len(rows)} rows from {len(files)} file(s), skipped {skipped} incomplete")
    return rows


def normalise_question(text: str) -> str:
    """The text two copies of a question share: NFKC, case-folded, whitespace runs as one space."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def drop_duplicate_questions(rows: list[dict]) -> list[dict]:
    """The rows whose normalised question was not seen before (file order); prints what was dropped."""
    first: dict[str, dict] = {}
    conflicting = 0
    for row in rows:
        key = normalise_question(row["question"])
        if key in first:
            conflicting += first[key]["answer"].strip() != row["answer"].strip()
        else:
            first[key] = row
    dropped = len(rows) - len(first)
    print(
        f"dropped {dropped} duplicate question(s) (same text after normalising Unicode, case and whitespace; "
        f"{conflicting} of them with a different answer); {len(first)} unique questions left"
    )
    return list(first.values())


def write(path: Path, columns: dict[str, list]) -> None:
    pq.write_table(pa.table(columns), path)
    print(f"wrote {path} ({len(next(iter(columns.values())))} rows)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--init", type=int, default=10000)
    parser.add_argument("--rl", type=int, default=10000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--solution-column", default="r1_solution_1")
    args = parser.parse_args(argv)
    try:
        rows = drop_duplicate_questions(load_rows(args.source, args.solution_column))
        need = args.init + args.rl + args.val
        if len(rows) < need:
            raise ValueError(
                f"{args.source}: {len(rows)} usable rows with distinct questions, but --init {args.init} + "
                f"--rl {args.rl} + --val {args.val} = {need} are needed"
            )
        outputs = [args.out / n for n in ("init.parquet", "val.parquet", "rl.parquet", "val_problems.parquet")]
        existing = [str(p) for p in outputs if p.exists()]
        if existing:
            raise FileExistsError(f"refusing to overwrite {existing}; choose a fresh --out")
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    order = np.random.default_rng(args.seed).permutation(len(rows))
    init, rl, val = np.split(order[:need], [args.init, args.init + args.rl])
    pick = lambda idx, key: [rows[i][key] for i in idx]  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    write(
        outputs[0],
        {"sft_prompt": pick(init, "question"), "solution": pick(init, "solution"), "answer": pick(init, "answer")},
    )
    write(
        outputs[1],
        {"sft_prompt": pick(val, "question"), "solution": pick(val, "solution"), "answer": pick(val, "answer")},
    )
    write(outputs[2], {"prompt": pick(rl, "question"), "answer": pick(rl, "answer"), "solution": pick(rl, "solution")})
    write(outputs[3], {"problem": pick(val, "question"), "answer": pick(val, "answer")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
