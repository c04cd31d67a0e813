"""On-policy RL stage (GRPO; LUFFY / ReLIFT via algo.method) from an init checkpoint.

    python experiments/rl_stage.py --config experiments/configs/rl_paper_grpo.yaml --workdir runs/rl \
        --set model.path=runs/init/hf_best --set data.train_file=rl.parquet --set data.val_file=val.parquet

Re-running with the same --workdir resumes (parameters, optimizer, prompt order, sampling keys).
Metrics: WORKDIR/metrics.jsonl and WORKDIR/tensorboard; the best (by validation avg@k) and final
policies: WORKDIR/hf_best and WORKDIR/hf_final.
"""

import sys

from gift_jax.cli import run_stage_cli
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.trainer import run_rl_stage


def main(argv=None) -> int:
    return run_stage_cli(RLStageConfig, run_rl_stage, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
