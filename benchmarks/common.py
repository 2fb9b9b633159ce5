"""Shared by the benchmarks: a trained quickstart run to measure on, made once if missing."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / "work"


def ensure_run(run_dir: Path, recipe: str = "recipes/quickstart.yaml", extra=(), subspaces=("base", "small", "tiny")) -> Path:
    """Train the SuperLMs of `recipe` into `run_dir` unless they are there (resumes a partial run)."""
    run_dir = Path(run_dir)
    if not all((run_dir / s / "superlm.json").is_file() for s in subspaces):
        subprocess.run(
            [sys.executable, "-m", "autodistil_evo.cli", "train", "--recipe", recipe, "--out", str(run_dir), "--resume", *extra],
            cwd=REPO, check=True,
        )
    return run_dir


def cli(*args):
    """Run an autodistil-evo command as a user would (a subprocess), failing loudly."""
    subprocess.run([sys.executable, "-m", "autodistil_evo.cli", *map(str, args)], cwd=REPO, check=True)


def finetune_accuracy(model_dir, budget: dict, seed: int = 0) -> dict:
    """Fine-tune on the embedded sentiment task with a fixed budget; the result JSON (kept beside the model)."""
    import json

    cache = Path(model_dir) / "finetune-result.json"
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("budget") == budget and kept.get("seed") == seed:
            return kept["result"]
    out = subprocess.run(
        [sys.executable, "-m", "autodistil_evo.cli", "finetune", str(model_dir), "--json", "--seed", str(seed),
         *(f"--{k.replace('_', '-')}={v}" for k, v in budget.items())],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    result = json.loads(out)
    cache.write_text(json.dumps({"budget": budget, "seed": seed, "result": result}))
    return result


def export_arch(run_dir, subspace: str, arch: dict, out_dir) -> Path:
    import json

    provenance = Path(out_dir) / "autodistil_provenance.json"
    if provenance.is_file():  # exported by an earlier run of a benchmark: same SuperLM and arch?
        kept = json.loads(provenance.read_text())
        superlm = json.loads((Path(run_dir) / subspace / "superlm.json").read_text())
        if kept["arch"] == arch and kept["subspace"] == subspace and kept["superlm_sha256"] == superlm["sha256"]:
            return Path(out_dir)
    cli("export", run_dir, "--arch", json.dumps({"subspace": subspace, **arch}), "--out", out_dir, "--force")
    return Path(out_dir)
