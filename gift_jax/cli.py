"""The shared command line of the scripts: the stages' `--config FILE --workdir DIR [--set k=v ...]
[--max-steps N] [--allow-changed-data]`, checked flag types, and one way to end.

The project's own errors (`gift_jax.errors`: a bad config, data file, model folder, workdir or flag; a
failed write; a run stopped by a signal) end with one `error: ...` (or `stopped: ...`) line on stderr
and the error's exit status (2, 3 or 75, see `gift_jax.errors`). Anything else (a shape, a sharding,
a bug) keeps its full traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

from gift_jax.config_io import load_config
from gift_jax.distributed import maybe_initialize_distributed
from gift_jax.errors import GiftError, RunStopped


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """An argparse `type` that accepts a finite `kind` value >= `minimum` (the flag is named in the error)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not (math.isfinite(value) and value >= minimum):
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def report_errors(main: Callable[[], int | None]) -> int:
    """Runs `main`; the project's own errors become one line on stderr (its last) and their exit status."""
    try:
        return main() or 0
    except GiftError as err:
        print(f"{'stopped' if isinstance(err, RunStopped) else 'error'}: {err}", file=sys.stderr, flush=True)
        # The line above is the last word: libraries' late complaints while the process winds down (e.g.
        # orbax's asyncio futures of a failed write, collected at exit) would bury it.
        logging.disable(logging.CRITICAL)
        sys.unraisablehook = lambda unraisable: None
        return err.exit_status


def run_stage_cli(config_cls, run: Callable, doc: str, argv=None) -> int:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML / JSON config file")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. loss.beta=8")
    parser.add_argument(
        "--max-steps", type=at_least(1), default=None, help="stop after this many loop steps in all (>= 1)"
    )
    parser.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="resume although a data file's content changed since the run started (otherwise refused)",
    )
    args = parser.parse_args(argv)
    maybe_initialize_distributed()

    def main() -> int:
        config = load_config(config_cls, args.config, args.set)
        summary = run(config, args.workdir, max_steps=args.max_steps, allow_changed_data=args.allow_changed_data)
        print(summary)
        return 0

    return report_errors(main)
