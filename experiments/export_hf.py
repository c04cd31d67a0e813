"""Export any checkpoint of a stage's workdir as a Hugging Face folder (transformers / vLLM load it).

    python experiments/export_hf.py --workdir runs/gift --out runs/gift/hf_step40 --step 40
    python experiments/export_hf.py --workdir runs/gift --out runs/gift/hf_best_bf16 --kind best --dtype bfloat16

`--step N` is loop step N (the step metrics.jsonl shows: an RL step, an init-stage update); without it
the newest step of `--kind` (periodic or best) is exported. The tokenizer comes from
the run's starting model folder. An existing non-empty `--out` is refused unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import sys

from gift_jax.models.config import DTYPES
from gift_jax.runtime.run_checkpoints import CHECKPOINT_KINDS, export_run_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="an init-stage or RL-stage workdir")
    parser.add_argument("--out", required=True, help="the HF folder to write")
    parser.add_argument("--step", type=int, default=None, help="loop step (RL step / init update) of the checkpoint")
    parser.add_argument("--kind", choices=CHECKPOINT_KINDS, default="periodic")
    parser.add_argument(
        "--dtype", default=None, choices=sorted(DTYPES), help="weight dtype of the export (default: as trained)"
    )
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = export_run_checkpoint(
            args.workdir, args.out, step=args.step, kind=args.kind, dtype=args.dtype, overwrite=args.overwrite
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
