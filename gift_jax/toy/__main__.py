"""Writes a toy world from the command line.

    python -m gift_jax.toy runs/toy_world --variant hard --seed 0 [--pretrain 40000 ...]

Prints the written paths and the manifest's summary (vocabulary, lengths, base-corpus mix).
"""

import argparse
import dataclasses
import json

from gift_jax.toy.corpus import EXPERT_STYLE, SplitSizes
from gift_jax.toy.world import write_world


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gift_jax.toy", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--variant", choices=sorted(EXPERT_STYLE), default="hard")
    parser.add_argument("--seed", type=int, default=0)
    for field in dataclasses.fields(SplitSizes):
        parser.add_argument(f"--{field.name}", type=int, default=field.default, help=f"problems in {field.name}")
    args = parser.parse_args(argv)
    sizes = {field.name: getattr(args, field.name) for field in dataclasses.fields(SplitSizes)}
    paths = write_world(args.out_dir, variant=args.variant, seed=args.seed, sizes=sizes)
    manifest = json.loads(paths["manifest"].read_text())
    for name, path in paths.items():
        print(f"{name:>14}: {path}")
    summary = {key: manifest[key] for key in ("expert_style", "vocab_size", "worst_case", "base_corpus")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
