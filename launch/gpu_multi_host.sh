#!/usr/bin/env bash
# Several GPU hosts, one process per host. Run on every host with the same command and
#   GIFT_COORDINATOR=<host0>:<port>  GIFT_NUM_PROCESSES=<hosts>  GIFT_PROCESS_ID=<0..hosts-1>
# e.g. with Slurm:  srun --ntasks-per-node=1 env GIFT_PROCESS_ID=$SLURM_PROCID \
#   GIFT_NUM_PROCESSES=$SLURM_NTASKS GIFT_COORDINATOR=$(scontrol show hostnames | head -1):12355 \
#   bash launch/gpu_multi_host.sh experiments/init_stage.py --config ... --workdir /shared/run
# Keep `tensor` within a host (NVLink) and put hosts on `data` / `fsdp`. The workdir must be shared.
set -euo pipefail
: "${GIFT_COORDINATOR:?set GIFT_COORDINATOR=host:port}"
: "${GIFT_NUM_PROCESSES:?set GIFT_NUM_PROCESSES}"
: "${GIFT_PROCESS_ID:?set GIFT_PROCESS_ID}"
exec bash "$(dirname "$0")/gpu_single_host.sh" "$@"
