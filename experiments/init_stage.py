"""Initialization stage (GIFT or an SFT-family baseline) from a config file plus overrides.

    python experiments/init_stage.py --config experiments/configs/init_tiny_cpu.yaml \
        --workdir runs/init_tiny --set loss.name=gift --set loss.beta=8

Re-running with the same --workdir resumes from its newest readable checkpoint. The resolved config is
saved as WORKDIR/config.json; metrics go to WORKDIR/metrics.jsonl and WORKDIR/tensorboard; the best (by
validation NLL) and final policies are exported as HF folders WORKDIR/hf_best and WORKDIR/hf_final.
Multi-host: set GIFT_DISTRIBUTED=1 (see launch/) so every process calls jax.distributed.initialize().
"""
import argparse
import sys

from gift_jax.config_io import ConfigError, load_config  # noqa: E402
from gift_jax.distributed import maybe_initialize_distributed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML / JSON config file")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. loss.beta=8")
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    maybe_initialize_distributed()
    from gift_jax.train.init_config import InitStageConfig
    from gift_jax.train.init_trainer import run_init_stage

    try:
        config = load_config(InitStageConfig, args.config, args.set)
        summary = run_init_stage(config, args.workdir, max_steps=args.max_steps)
    except (ConfigError, ValueError, FileNotFoundError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
