"""Export any checkpoint of a stage's workdir as a Hugging Face folder (transformers / vLLM load it).

    python experiments/export_hf.py --workdir runs/gift --out runs/gift/hf_step40 --step 40
    python experiments/export_hf.py --workdir runs/gift --out runs/gift/hf_best_bf16 --kind best --dtype bfloat16

`--step N` is loop step N (the step metrics.jsonl shows: an RL step, an init-stage update); without it
the newest step of `--kind` (periodic or best) is exported. The tokenizer comes from
the run's starting model folder. An existing non-empty `--out` is refused unless `--overwrite`, and
even then a run workdir, a folder inside one (other than an export) or a folder holding one is
never replaced. Exit statuses: `gift_jax.errors`.
"""

from __future__ import annotations

import argparse
import sys

from gift_jax.cli import at_least, report_errors
from gift_jax.models.config import DTYPES
from gift_jax.runtime.run_checkpoints import CHECKPOINT_KINDS, export_run_checkpoint
from gift_jax.storage import as_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="an init-stage or RL-stage workdir")
    parser.add_argument("--out", required=True, help="the HF folder to write")
    parser.add_argument(
        "--step", type=at_least(0), default=None, help="loop step (RL step / init update) of the checkpoint"
    )
    parser.add_argument("--kind", choices=CHECKPOINT_KINDS, default="periodic")
    parser.add_argument(
        "--dtype", default=None, choices=sorted(DTYPES), help="weight dtype of the export (default: as trained)"
    )
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    out = as_path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        parser.error(f"--out {out} exists and is not empty; pass --overwrite to replace it")

    def export() -> int:
        print(
            export_run_checkpoint(
                args.workdir, out, step=args.step, kind=args.kind, dtype=args.dtype, overwrite=args.overwrite
            )
        )
        return 0

    return report_errors(export)


if __name__ == "__main__":
    sys.exit(main())
