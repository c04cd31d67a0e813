"""Initialization stage (GIFT or an SFT-family baseline) from a config file plus overrides.

    python experiments/init_stage.py --config experiments/configs/init_qwen2.5_7b_gift.yaml --workdir runs/init \
        --set model.path=/models/Qwen2.5-7B --set data.train_file=init.parquet --set data.val_file=val.parquet

Re-running with the same --workdir resumes from its newest readable checkpoint. The resolved config is
saved as WORKDIR/config.json; metrics go to WORKDIR/metrics.jsonl and WORKDIR/tensorboard; the best (by
validation NLL) and final policies are exported as HF folders WORKDIR/hf_best and WORKDIR/hf_final.
Multi-host: see launch/ (every process calls jax.distributed.initialize()).
"""

import sys

from gift_jax.cli import run_stage_cli
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage


def main(argv=None) -> int:
    return run_stage_cli(InitStageConfig, run_init_stage, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
