"""Write a benchmark's measured table into its own section of BENCHMARKS.md (between markers)."""

import platform
import re
import sys
from pathlib import Path

import torch
from common import REPORT_DIR

BENCHMARKS_MD = REPORT_DIR / "BENCHMARKS.md"
FIGURES = REPORT_DIR / "benchmarks"
RESULTS = FIGURES / "results"


def machine() -> str:
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.machine()}{gpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {platform.python_version()}"


def commit() -> str:
    """The checkout's HEAD commit ("unknown" outside git)."""
    import subprocess

    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def describe_finetune(budget: dict) -> str:
    """A fine-tuning budget as a person reads it: "3,000 examples, 2 epochs, batch 32, lr 3e-4, max length 64"."""
    words = {"max_train": lambda v: f"{v:,} examples", "epochs": lambda v: f"{v} epoch{'s' if v != 1 else ''}",
             "batch_size": lambda v: f"batch {v}", "lr": lambda v: f"lr {v:g}", "max_len": lambda v: f"max length {v}",
             "micro_batches": lambda v: f"{v} length-sorted micro-batches a batch"}
    return ", ".join(words[k](v) if k in words else f"{k} {v}" for k, v in budget.items())


def command() -> str:
    return "python " + " ".join(["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]])


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str):
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` in BENCHMARKS.md, ending
    with the commit it was measured at (sections of `make bench-studies` stay from older commits)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    body = f"{body.strip()}\n\nMeasured at {commit()[:10]}."
    block = f"{start}\n{body}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = BENCHMARKS_MD.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(BENCHMARKS_MD)
    print(body)


def save_figure(fig, name: str):
    """A benchmark's figure as benchmarks/<name>.png (under smoke, in its report folder)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / f"{name}.png", dpi=100)


def _strict(value):
    """`value` with NaN and infinities as null: strict JSON, which jq and JavaScript read."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_results(name: str, data: dict):
    """The numbers of a benchmark's table, machine-readable, in benchmarks/results/<name>.json (an
    undefined figure, e.g. Kendall tau over tied accuracies, as null)."""
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_strict({"machine": machine(), "command": command(), **data}), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
