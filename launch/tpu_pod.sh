#!/usr/bin/env bash
# Runs an experiment on every worker of a TPU pod slice. From your workstation:
#
#   gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
#     --command "cd ~/gift-jax && bash launch/tpu_pod.sh experiments/init_stage.py \
#                --config experiments/configs/init_qwen2.5_7b_gift.yaml --workdir /mnt/gcs/runs/gift_qwen"
#
# Each worker installs the project (once), then starts the same command; GIFT_DISTRIBUTED=1 makes
# every process call jax.distributed.initialize(), which discovers the coordinator from the TPU
# metadata. Data files and model folders must be readable from every worker (same local path or a
# shared mount); the workdir must be shared since all processes checkpoint: a gs:// URL (e.g.
# --workdir gs://my-bucket/runs/gift_qwen; written through etils.epath + gcsfs, as orbax does; the
# one-run-per-workdir lock is not taken there, a warning says so) or a shared mount at the same
# path (NFS locks; gcsfuse may not). Model folders may be gs:// URLs too; data files must be local.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q "jax[tpu]" -r requirements.txt -e . gcsfs google-cloud-storage  # the last two: gs:// paths
fi
export GIFT_DISTRIBUTED=1
exec .venv/bin/python "$@"
