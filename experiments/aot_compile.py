"""Compile-only fit check: does a stage's step fit a TPU slice (or this machine's accelerator)?

    python experiments/aot_compile.py --config experiments/configs/init_qwen2.5_7b_gift.yaml \
        --model-config experiments/model_shapes/qwen2.5_7b.json --topology v5p-64 --json fit.json

Compiles the trainer's own step from abstract inputs (shapes only: the model folder's config.json,
or --model-config; no weights, no data) and prints per-chip argument / output / temp / peak bytes,
the chip's HBM, HLO FLOPs and the bytes of each kind of collective. Exit status 1 when the step does
not fit (including when the compiler refuses it for lack of memory), 2 on a bad config.

TPU topologies (v4-8 ... v6e-32, see `gift_jax.aot.TOPOLOGIES`) need libtpu importable but no TPU:
`pip install -e '.[tpu]'` in a separate environment, or `pip install --target DIR libtpu==0.0.42.*`
and PYTHONPATH=DIR for this command only (installed into the main environment, libtpu would make
jax look for a TPU in every process). `--topology local` compiles for the default backend.
Iterate with `--model-set num_layers=4`; a 28-layer 7B step takes minutes and GiBs of host RAM.
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

from gift_jax.aot import LOCAL, STAGES, TOPOLOGIES, init_step_fit, rl_step_fit, rollout_fit
from gift_jax.config_io import ConfigError, load_config
from gift_jax.models import config_from_hf, read_config
from gift_jax.rl.config import RLStageConfig
from gift_jax.train.init_config import InitStageConfig

GIB = 1024**3


def _model_config(model_path: str, model_config_file: str | None, model_set: list[str]):
    """Architecture from --model-config (a config.json or a folder holding one) or the config's model.path."""
    source = Path(model_config_file or model_path)
    if source.is_dir():
        config = read_config(source)
    elif source.is_file():
        # JSON as JSON: YAML 1.1 would read 1e-06 as a string
        text = source.read_text()
        config = config_from_hf(
            json.loads(text) if source.suffix == ".json" else yaml.safe_load(text), source=str(source)
        )
    else:
        raise ConfigError(
            f"no model shapes: {source} is neither a model folder nor a config.json (pass --model-config FILE)"
        )
    changes = {}
    for item in model_set:
        key, sep, raw = item.partition("=")
        if not sep or not hasattr(config, key):
            raise ConfigError(f"--model-set {item!r}: expected FIELD=VALUE with a ModelConfig field")
        changes[key] = yaml.safe_load(raw)
    return config.replace(**changes)


def _print(report) -> None:
    gib = lambda b: "?" if b is None else f"{b / GIB:.2f} GiB"  # noqa: E731
    print(f"{report.stage} step on {report.topology} ({report.chips} chips), shapes {report.shapes}")
    print(
        f"  per chip: arguments {gib(report.argument_bytes)}, outputs {gib(report.output_bytes)}, "
        f"temp {gib(report.temp_bytes)}, "
        + (f"held alongside {gib(report.resident_bytes)}, " if report.resident_bytes else "")
        + f"peak {gib(report.peak_bytes_per_chip)} of HBM {gib(report.hbm_bytes_per_chip)}"
        f" -> {'fits' if report.fits else 'DOES NOT FIT'}"
    )
    if report.error:
        print(f"  compiler: {report.error}")
    if report.flops is not None:
        print(
            f"  HLO FLOPs per chip: {report.flops:.3e}; model copy ({report.shapes['dtype']}): "
            f"{gib(report.model_bytes)}"
        )
    total = sum(report.collective_bytes.values())
    if report.collective_bytes:
        kinds = ", ".join(f"{k} {gib(v)}" for k, v in report.collective_bytes.items() if v)
        print(f"  collectives per chip: {gib(total)} = {total / report.model_bytes:.1f} model copies ({kinds})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="stage YAML (init or RL)")
    parser.add_argument("--topology", default=LOCAL, choices=[LOCAL, *TOPOLOGIES])
    parser.add_argument("--stage", default="init", choices=STAGES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="stage-config override")
    parser.add_argument("--model-config", default=None, help="HF config.json (or folder) giving the shapes")
    parser.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="architecture override, e.g. num_layers=4",
    )
    parser.add_argument("--seq-len", type=int, default=None, help="init: row length (default data.max_length)")
    parser.add_argument("--prompt-length", type=int, default=512, help="rl / rollout: prompt tokens per row")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--hlo", default=None, help="write the optimized HLO text here")
    args = parser.parse_args(argv)
    try:
        config = load_config(InitStageConfig if args.stage == "init" else RLStageConfig, args.config, args.set)
        model_config = _model_config(config.model.path, args.model_config, args.model_set)
        if args.stage == "init":
            report = init_step_fit(
                config, model_config, topology=args.topology, seq_len=args.seq_len, hlo_file=args.hlo
            )
        else:
            fit = rl_step_fit if args.stage == "rl" else rollout_fit
            report = fit(
                config, model_config, topology=args.topology, prompt_length=args.prompt_length, hlo_file=args.hlo
            )
    except (ConfigError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print(report)
    if args.json:
        Path(args.json).write_text(report.to_json() + "\n")
    return 0 if report.fits else 1


if __name__ == "__main__":
    sys.exit(main())
