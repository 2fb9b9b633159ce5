"""Shared by the benchmarks: a trained quickstart run to measure on, made once if missing."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / "work"


def ensure_run(run_dir: Path, recipe: str = "recipes/quickstart.yaml", extra=()) -> Path:
    """Train the SuperLMs of `recipe` into `run_dir` unless they are there (resumes a partial run)."""
    run_dir = Path(run_dir)
    if not all((run_dir / s / "superlm.json").is_file() for s in ("base", "small", "tiny")):
        subprocess.run(
            [sys.executable, "-m", "autodistil_evo.cli", "train", "--recipe", recipe, "--out", str(run_dir), "--resume", *extra],
            cwd=REPO, check=True,
        )
    return run_dir
