#!/usr/bin/env bash
# The prepared GPU check of issue #40, sized for about 8 minutes on one GPU: the SuperLM step at the
# paper's batch (sequence 128, micro-batches 32/64/128, fp32 and bf16) against a Transformers BertModel
# step, MFU against the device's measured bf16 matmul peak. Writes benchmarks/results/gpu_scale.json and
# the "GPU scale" section of BENCHMARKS.md. Run from the repository root: bash benchmarks/gpu_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_scale.sh: no CUDA device")' 2>/dev/null || "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_scale.sh: no CUDA device")'
exec "$PY" benchmarks/gpu_scale.py --steps "${STEPS:-10}" "$@"
