#!/usr/bin/env bash
# The GPU check, prepared for a session that is lent a CUDA GPU (tests never need one):
# train (fp32 and bf16) and evolve (bf16 proxy) on CUDA, then select, export and bench (these run
# on the CPU), and the trainer's own step timed in both precisions (tokens/s, SuperLM sandwich step
# vs a standalone student), written to BENCHMARKS.md sections train_throughput_cuda_{fp32,bf16} and
# benchmarks/results/*.json.
# Needs a CUDA build of torch in $BIN's environment. Usage: bash benchmarks/gpu_check.sh [BIN]
set -euo pipefail
BIN=${1:-.venv/bin}
cd "$(dirname "$0")/.."
"$BIN/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing measured')"
"$BIN/python" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
OUT=benchmarks/work/gpu
for precision in fp32 bf16; do
  "$BIN/python" benchmarks/train_throughput.py --recipe recipes/bench.yaml --precision "$precision" --steps 20 \
    --section "train_throughput_cuda_$precision"
  "$BIN/autodistil-evo" train --recipe recipes/bench.yaml --out "$OUT/run-$precision" --steps 50 --save-every 25 \
    --precision "$precision" --resume
done
"$BIN/autodistil-evo" evolve "$OUT/run-bf16" --out "$OUT/search" --population 16 --generations 4 --precision bf16 --resume
"$BIN/autodistil-evo" select "$OUT/search" --pick knee
ID=$("$BIN/autodistil-evo" select "$OUT/search" --pick knee --json | "$BIN/python" -c \
  'import json, sys; print(next(r["id"] for r in json.load(sys.stdin) if r["picked"]))')
"$BIN/autodistil-evo" export "$OUT/search" --id "$ID" --out "$OUT/student" --force
"$BIN/autodistil-evo" bench "$OUT/student" --precision bf16
echo "GPU check done: see BENCHMARKS.md (train_throughput_cuda_fp32 / _bf16)"
