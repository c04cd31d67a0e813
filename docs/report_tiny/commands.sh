#!/bin/bash
# Two real tiny runs through the paper's commands on the toy world (`hard`): GIFT (beta 4) and SFT inits ->
# identical GRPO from each hf_best -> evaluate.py before and after RL on two benchmark files -> report.py.
set -e
W=$1; PY=/work/main/.venv/bin/python
cd /work/wt/paper; export PYTHONPATH=$PWD
$PY - "$W" <<'PYEOF'
import json, sys
from pathlib import Path
from gift_jax.toy.pipeline import prepare_variant
from gift_jax.toy.presets import PRESETS
W = Path(sys.argv[1])
files, base = prepare_variant(PRESETS["default"], W, "hard", shipped_bases=[Path("experiments/toy_base")])
rows = files["eval"].read_text().splitlines()
(W / "bench_a.jsonl").write_text("\n".join(rows[:64]) + "\n")
(W / "bench_b.jsonl").write_text("\n".join(rows[64:128]) + "\n")
(W / "inputs.json").write_text(json.dumps({**{k: str(v) for k, v in files.items()}, "base": str(base)}))
PYEOF
get() { $PY -c "import json,sys; print(json.load(open('$W/inputs.json'))['$1'])"; }
BASE=$(get base); EXPERT=$(get expert); EXPERT_VAL=$(get expert_val); RL=$(get rl_prompts); EVAL=$(get eval)
EVALARGS="--benchmarks a=$W/bench_a.jsonl b=$W/bench_b.jsonl --k 4 --temperature 0.6 --max-new-tokens 48 --dtype float32 --no-progress"
for LOSS in gift sft; do
  $PY experiments/init_stage.py --workdir $W/init_$LOSS --set model.path=$BASE --set model.prompt.instruction=null \
    --set data.train_file=$EXPERT --set data.val_file=$EXPERT_VAL --set data.max_length=64 --set "data.bucket_lengths=[64]" \
    --set data.num_threads=0 --set loss.name=$LOSS --set loss.beta=4.0 --set loss.chunk_size=64 --set optim.lr=1e-3 \
    --set optim.schedule=constant --set train.global_batch=64 --set train.micro_batch_per_device=64 --set train.epochs=4 \
    --set train.eval_every=8 --set train.log_every=16
  $PY experiments/evaluate.py --model $W/init_$LOSS/hf_best $EVALARGS --out $W/eval_init_$LOSS
  $PY experiments/rl_stage.py --workdir $W/rl_$LOSS --set model.path=$W/init_$LOSS/hf_best --set model.base_path=$BASE \
    --set model.prompt.instruction=null --set data.train_file=$RL --set data.val_file=$EVAL --set data.val_limit=64 \
    --set rollout.group_size=8 --set rollout.max_new_tokens=48 --set algo.mini_batch_prompts=16 --set algo.chunk_size=64 \
    --set reward.num_workers=1 --set optim.lr=2e-4 --set optim.b2=0.95 --set train.prompts_per_step=32 \
    --set train.micro_batch_per_device=128 --set train.max_steps=30 --set train.eval_every=10 --set train.eval_k=4 \
    --set train.checkpoint_every=15 --set train.log_every=5 --set train.dump_rollouts_every=10 --set train.dump_rollouts_rows=16
  $PY experiments/evaluate.py --model $W/rl_$LOSS/hf_final $EVALARGS --out $W/eval_rl_$LOSS
done
$PY experiments/report.py $W --out $W/report
