"""The shared command line of the stage scripts: `--config FILE --workdir DIR [--set k=v ...] [--max-steps N]`.

A bad config, input file, model folder or workdir found while the run loads ends with one `error: ...`
line and exit status 2, before anything is written over existing checkpoints or results. An error once
training is under way (a shape, a sharding, a device) keeps its full traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gift_jax.config_io import ConfigError, load_config
from gift_jax.distributed import maybe_initialize_distributed
from gift_jax.runtime.run import is_loading_error


def run_stage_cli(config_cls, run: Callable, doc: str, argv=None) -> int:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML / JSON config file")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. loss.beta=8")
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    maybe_initialize_distributed()
    try:
        config = load_config(config_cls, args.config, args.set)
        summary = run(config, args.workdir, max_steps=args.max_steps)
    except Exception as err:
        if not (isinstance(err, ConfigError) or is_loading_error(err)):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0
