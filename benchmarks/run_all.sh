#!/usr/bin/env bash
# `make bench`: every benchmark, each writing its section of BENCHMARKS.md. $1 = the venv's bin/.
set -euo pipefail
BIN=${1:-.venv/bin}
cd "$(dirname "$0")/.."
for script in supernet_overhead train_throughput search_quality k_subspaces proxy_correlation vs_handpicked data_scale deploy; do
  echo "== benchmarks/$script.py"
  "$BIN/python" "benchmarks/$script.py"
done
