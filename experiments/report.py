"""A report over real runs: one markdown table and training curves (`gift_jax.evaluation.run_report`).

    python experiments/report.py /ckpt/qwen_gift /ckpt/qwen_sft /ckpt/qwen_gift_rl /ckpt/qwen_sft_rl \
        /ckpt/eval_gift_rl /ckpt/eval_sft_rl --out /ckpt/report

Each path is a stage workdir, an `evaluate.py --out` folder, or a folder holding such (its direct
subfolders are read). Runs are linked by the paths in their configs: an RL run continues the init
workdir its `model.path` lies in; an evaluation belongs to the workdir its model lies in. Writes
`report.md` (one row per RL run with its init: init loss and hyper-parameters, best validation NLL
and its step, RL algorithm, RL steps, best validation avg@k, avg@n / pass@n per benchmark),
`report.json` (the rows), `init_curves.png` and `rl_curves.png` to `--out`. Takes seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gift_jax.evaluation.run_report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="stage workdirs, evaluation outputs, or their parents")
    parser.add_argument("--out", required=True, type=Path, help="folder for report.md, report.json and the plots")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.paths, args.out)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(path.read_text())
    print(f"wrote {path}, {args.out / 'report.json'} and the curves", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
