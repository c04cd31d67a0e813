"""The embedded end-to-end pipeline: toy base -> init stage (SFT, GIFT, ...) -> identical GRPO -> evaluation.

    python experiments/pipeline.py --preset default --workdir runs/default    # ~9 min on 2 CPU cores
    python experiments/pipeline.py --preset smoke --workdir runs/smoke        # < 1 min (CI runs it)
    python experiments/pipeline.py --preset sweep --workdir runs/sweep        # ~18 min: the beta sweep, 1 seed
    python experiments/pipeline.py --preset baselines --workdir runs/baselines  # ~40 min: every init, 3 seeds
    python experiments/pipeline.py --preset full --workdir runs/full          # hours: 3 seeds, sweep, baselines
    python experiments/pipeline.py --preset paper --workdir runs/paper        # the `tradeoff` world: every
        # init of the paper (incl. LUFFY / ReLIFT) and a beta grid, 3 seeds (time in the README)
    python experiments/pipeline.py --preset dapo --workdir runs/dapo          # the same world, DAPO instead
        # of GRPO: base, SFT, ASFT, GIFT at two betas, 3-5 seeds (time in the README)

What each run does and what is written: `gift_jax.toy.pipeline`. The bases shipped beside this script
(`toy_base`: the `hard` / `control` worlds; `toy_base_tradeoff`) are used when their world record
matches; otherwise the pipeline pretrains one into the workdir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gift_jax.toy.pipeline import run_pipeline
from gift_jax.toy.presets import PRESETS

SHIPPED_BASE = Path(__file__).resolve().parent / "toy_base"  # the `hard` / `control` worlds' base
SHIPPED_BASES = (SHIPPED_BASE, SHIPPED_BASE.with_name("toy_base_tradeoff"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: the preset's)")
    args = parser.parse_args(argv)
    run_pipeline(args.preset, args.workdir, jobs=args.jobs, shipped_bases=SHIPPED_BASES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
