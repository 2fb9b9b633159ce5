#!/usr/bin/env bash
# `make bench`: every benchmark, each writing its section of BENCHMARKS.md and its
# benchmarks/results/<name>.json. Every stage is cached under benchmarks/work/ (runs, searches,
# exports, fine-tune results), so an interrupted `make bench` continues where it stopped.
# $1 = the venv's bin/.
set -euo pipefail
BIN=${1:-.venv/bin}
cd "$(dirname "$0")/.."
run() { echo "== benchmarks/$*"; "$BIN/python" "benchmarks/$@"; }
run supernet_overhead.py
run train_throughput.py
run search_quality.py
run proxy_correlation.py        # trains the bench SuperLMs (recipes/bench.yaml) and searches them
run bench_superlms.py
run vs_handpicked.py
run k_subspaces.py --budget bench
run k_subspaces.py --budget quickstart
run data_scale.py
run deploy.py
