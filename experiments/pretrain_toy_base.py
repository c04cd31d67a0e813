"""Pretrains the toy world's base model and saves it as a Hugging Face folder (with its tokenizer).

    python experiments/pretrain_toy_base.py --out experiments/toy_base [--steps 1500]   # ~9 min on 2 cores
    python experiments/pretrain_toy_base.py --variant tradeoff --init-from experiments/toy_base \
        --out experiments/toy_base_tradeoff                                             # ~12 min: 400 more steps

See `gift_jax.toy.base_pretraining` for what is trained and how the pipeline decides to retrain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from gift_jax.toy.base_pretraining import pretrain_base
from gift_jax.toy.corpus import EXPERT_STYLE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "toy_base")
    parser.add_argument("--steps", type=int, default=None, help="from-scratch steps (default 1500)")
    parser.add_argument("--init-from", type=Path, default=None, help="the parent base, for a continued variant")
    parser.add_argument("--variant", choices=sorted(EXPERT_STYLE), default="hard", help="whose base mix to pretrain on")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="toy_base_"))
    print(pretrain_base(args.out, steps=args.steps, work=work, variant=args.variant, init_from=args.init_from))
    return 0


if __name__ == "__main__":
    sys.exit(main())
