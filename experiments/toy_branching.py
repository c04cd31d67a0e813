"""The toy base's probabilities at the branching positions, which fix what GIFT's target can learn.

    python experiments/toy_branching.py --model experiments/toy_base_tradeoff --variant tradeoff

Prints JSON: mean p of each style header after the generation prompt, of `\\boxed{` after each
style's work, and how many tokens of the expert's solution the model finds unlikely. Measured on
the world's held-out eval problems (`--problems` of them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gift_jax.toy.base_pretraining import WORLD_SEED
from gift_jax.toy.branch_probabilities import measure_branching
from gift_jax.toy.corpus import EXPERT_STYLE, SplitSizes, split_problems
from gift_jax.toy.task import TaskSpec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--variant", choices=sorted(EXPERT_STYLE), default="tradeoff")
    parser.add_argument("--problems", type=int, default=256)
    args = parser.parse_args(argv)
    problems = split_problems(TaskSpec(), SplitSizes(), WORLD_SEED)["eval"][: args.problems]
    print(json.dumps(measure_branching(args.model, problems, EXPERT_STYLE[args.variant]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
