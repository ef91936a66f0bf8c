#!/usr/bin/env bash
# Every GPU check in one run, under 10 minutes on one H100/H200 (the device tool's budget):
#
#   bash scripts/gpu_check.sh [OUT]        # OUT defaults to $OUT, else runs/gpu_check
#
# 1. `mio bench train --preset gpu`: bf16, document attention vs causal, model FLOPs utilisation;
# 2. `mio bench generate`: the engine vs transformers' generate on the GPU, and `mio bench
#    serve`: the server with 16 concurrent clients vs one at a time;
# 3. the smoke demo with its language-model stages on the GPU (bf16 autocast);
# 4. Stage I at the gpu preset's width (768 x 12 layers) for 200 steps: loss must fall;
# 5. the released MIO-7B layout (a tiny replica) on the GPU: image in and out, speech out.
# Each step writes its JSON or log under OUT and a line to OUT/summary.txt; a failing step
# does not stop the others.
set -u
OUT=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
step() {  # step NAME TIMEOUT_SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$SUMMARY"
}
step bench_train 150 mio bench train --preset gpu --device cuda --json "$OUT/bench_train.json"
step bench_generate 90 mio bench generate --preset small --device cuda --json "$OUT/bench_generate.json"
step bench_serve 90 mio bench serve --preset small --device cuda --json "$OUT/bench_serve.json"
step demo_smoke 180 mio demo --preset smoke --out "$OUT/smoke"
step stage1_gpu 120 mio train "$OUT/smoke/configs/stage1.toml" --set out_dir="$OUT/stage1_gpu" --set steps=200 \
  --set device=cuda --set model.hidden_size=768 --set model.num_layers=12 --set model.num_heads=12 \
  --set model.num_kv_heads=4 --set model.intermediate_size=2048 --set batch_size=16 --set save_every=200
step released_replica 90 python scripts/gpu_released_replica.py "$OUT/released"
cat "$SUMMARY"
