#!/usr/bin/env bash
# One GPU host (1-8 GPUs), one process seeing every GPU:
#   bash launch/gpu_single_host.sh experiments/init_stage.py --config experiments/configs/init_qwen2.5_7b_gift.yaml \
#     --workdir /ckpt/gift_qwen --set mesh.fsdp=-1
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q "jax[cuda12]" -r requirements.txt -e .
fi
# Let XLA take most of the GPU memory up front (the default 75% leaves room unused for 7-8B models).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
exec .venv/bin/python "$@"
