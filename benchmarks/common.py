"""Shared by the benchmarks: the runs and searches they measure on, made once if missing (every
stage is cached on disk, so an interrupted `make bench` continues where it stopped)."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# `make bench-smoke` sets AUTODISTIL_BENCH_SMOKE=1, which each stage inherits from run_all.py: every
# stage on minutes-sized budgets (`if SMOKE:` below, run_all.SMOKE_ARGS) in a folder of its own, its
# report there too, to check that a change to the benchmarks runs through before hours of
# `make bench` are spent on it. Never numbers to report.
SMOKE = os.environ.get("AUTODISTIL_BENCH_SMOKE") == "1"
WORK = REPO / "benchmarks" / ("work-smoke" if SMOKE else "work")
# Where a stage's report goes (report.py): BENCHMARKS.md, benchmarks/results/*.json and the figures.
REPORT_DIR = WORK / "report" if SMOKE else REPO


def write_recipe(source, out: Path, **changes) -> str:
    """A copy of the recipe `source` at `out` with `changes`, its space and DeepSpeed files named by absolute
    path (a recipe's relative paths are read against its own folder). Returns `out` as a string."""
    import yaml

    from autodistil_evo.distill.recipe import load_recipe

    loaded = load_recipe(REPO / source)
    recipe = yaml.safe_load(Path(loaded.source).read_text())
    recipe.update({"space": str(loaded.space_file().resolve()), "deepspeed": str(loaded.deepspeed_file().resolve()),
                   **changes})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(recipe))
    return str(out)


def _recipe(path: str) -> str:
    """`path`, or under smoke its copy trained for 4 steps (a checkpoint every 2: the bench
    SuperLMs' section compares the last two)."""
    return write_recipe(path, WORK / "recipes" / Path(path).name, steps=4, save_every=2, warmup_steps=1) if SMOKE else path


def recipe_steps(recipe: str) -> int:
    """The number of training steps `recipe` asks for (the per-arch budget of a standalone distillation)."""
    import yaml

    return int(yaml.safe_load((REPO / recipe).read_text())["steps"])


QUICKSTART_RECIPE = _recipe("recipes/quickstart.yaml")


def ensure_run(run_dir: Path, recipe: str | None = None, extra=(), subspaces=("base", "small", "tiny")) -> Path:
    """Train the SuperLMs of `recipe` (the quickstart's by default) into `run_dir` unless they are there
    (resumes a partial run)."""
    run_dir, recipe = Path(run_dir), recipe or QUICKSTART_RECIPE
    if not all((run_dir / s / "superlm.json").is_file() for s in subspaces):
        subprocess.run(
            [sys.executable, "-m", "autodistil_evo.cli", "train", "--recipe", recipe, "--out", str(run_dir), "--resume", *extra],
            cwd=REPO, check=True,
        )
    return run_dir


def _env(threads: int | None):
    """The environment of a subprocess limited to `threads` torch threads (None: torch's default, every core)."""
    return None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}


def cli(*args, threads: int | None = None):
    """Run an autodistil-evo command as a user would (a subprocess), failing loudly."""
    subprocess.run([sys.executable, "-m", "autodistil_evo.cli", *map(str, args)], cwd=REPO, check=True, env=_env(threads))


# Fine-tunes and the standalone distillations of equal compute and proxy trustworthiness (none of them
# timed) run this many at a time, the cores split between them. On the 2-core machine two one-thread
# fine-tunes side by side did 1.2x (the teacher) to 1.6x (a 0.85-GFLOPs student) the work of one
# two-thread fine-tune at a time, 1.25x over Serving's 8 students (CHANGELOG): small matrices keep two
# threads of one process half idle. What is timed (throughput, latency, closing the gap's
# distillations) still runs alone.
WORKERS = 2


def in_parallel(fn, items, workers: int = WORKERS, label: str = "fine-tunes") -> list:
    """fn(item, threads) for every item, `workers` at a time, each given its share of the cores, in the
    order given (largest first, `by_size`, so that no big one is left to run last on a share). A
    progress bar counts the items done, with an ETA: their own output is captured."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    items = list(items)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress, ThreadPoolExecutor(workers) as pool:
        bar = progress.add_task(f"{label}, {workers} at a time", total=len(items))

        def one(item):
            result = fn(item, threads)
            progress.advance(bar)
            return result

        return list(pool.map(one, items))


def budget_flags(budget: dict) -> list:
    """A fine-tuning budget as `finetune` options: {"max_train": 3000} -> ["--max-train=3000"]."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in budget.items()]


def student_dir(run_dir, subspace: str, arch: dict) -> Path:
    """One folder per (run, sub-space, arch): a student two benchmarks pick is exported and fine-tuned once."""
    from autodistil_evo.spaces.space import Arch

    run = Path(run_dir).resolve()
    tag = str(run.relative_to(WORK.resolve())).replace("/", "-") if run.is_relative_to(WORK.resolve()) else run.name
    return WORK / "students" / tag / f"{subspace}-{Arch.from_dict(arch).key()}"


def export_arch(run_dir, subspace: str, arch: dict) -> Path:
    """The student exported from `run_dir` into its `student_dir`, unless it is there from the same SuperLM."""
    import json

    out_dir = student_dir(run_dir, subspace, arch)
    provenance = out_dir / "autodistil_provenance.json"
    if provenance.is_file():  # exported by an earlier run of a benchmark: same SuperLM and arch?
        kept = json.loads(provenance.read_text())
        superlm = json.loads((Path(run_dir) / subspace / "superlm.json").read_text())
        if kept["arch"] == arch and kept["subspace"] == subspace and kept["superlm_sha256"] == superlm["sha256"]:
            return out_dir
    cli("export", run_dir, "--arch", json.dumps({"subspace": subspace, **arch}), "--out", out_dir, "--force")
    return out_dir


# The bench budget (recipes/bench.yaml SuperLMs; fine-tuning where students learn): one place.
BENCH_RECIPE = _recipe("recipes/bench.yaml")
BENCH_RUN = WORK / "bench-run"
BENCH_SEARCH = WORK / "bench-k3-search"
BENCH_SEARCH_SIZE = {"population": 16, "generations": 8}
# Picked from a grid (1e-4, 3e-4, 1e-3) on dev over quickstart students; see BENCHMARKS.md. Two epochs:
# after one, some seeds of small students still predict the majority class (a seed spread of 7 points).
# Four length-sorted micro-batches per batch: the plain batch's update with less padding (a batch of 32
# review snippets pads to about twice its mean length), about a sixth off the teacher's fine-tune.
FINETUNE = {"max_train": 3000, "epochs": 2, "batch_size": 32, "lr": 3e-4, "max_len": 64, "micro_batches": 4}
SEEDS = 3
if SMOKE:  # two seeds: a spread still has two values
    BENCH_SEARCH_SIZE = {"population": 8, "generations": 2}
    FINETUNE = {"max_train": 64, "epochs": 1, "batch_size": 32, "lr": 3e-4, "max_len": 32, "micro_batches": 4}
    SEEDS = 2


def lever_tag(space: str | None = None, rewire: bool = False, order_hidden: bool = False) -> str:
    """The name of a lever of the bench SuperLMs ("" for none): "-minilm-l6-wide", "-rewire", "-ordered"."""
    return (f"-{Path(space).stem}" if space else "") + ("-rewire" if rewire else "") + ("-ordered" if order_hidden else "")


def ensure_bench_search(space: str | None = None, rewire: bool = False, order_hidden: bool = False) -> tuple:
    """The bench run (K=3 SuperLMs of recipes/bench.yaml) and its NSGA-II search; with a lever (`space`, a
    space file; `rewire`, importance-ordered heads and FFN; `order_hidden`, importance-ordered hidden channels)
    the same recipe so changed, in folders of its own."""
    run, search, recipe, extra, subspaces = BENCH_RUN, BENCH_SEARCH, BENCH_RECIPE, (), ("base", "small", "tiny")
    if space or rewire or order_hidden:
        from autodistil_evo.spaces import load_space

        tag = lever_tag(space, rewire, order_hidden)
        run, search = WORK / f"bench-run{tag}", WORK / f"bench-search{tag}"
        changes = {k: True for k, on in (("rewire", rewire), ("order_hidden", order_hidden)) if on}
        if changes:
            recipe = write_recipe(BENCH_RECIPE, WORK / "recipes" / f"bench{lever_tag(None, rewire, order_hidden)}.yaml", **changes)
        if space:
            extra, subspaces = ("--space", space), tuple(load_space(space).subspaces)
    run = ensure_run(run, recipe, extra, subspaces)
    if not (search / "pareto.json").is_file():
        cli("evolve", run, "--out", search, "--population", BENCH_SEARCH_SIZE["population"],
            "--generations", BENCH_SEARCH_SIZE["generations"], "--resume")
    return run, search


def finetune_key(budget: dict, seeds: int) -> dict:
    """What a cached fine-tune must match to be reused. The fine-tuning code and the task's splits
    (data.py) are part of it: a result from older code or another test split is not reused."""
    from autodistil_evo.fileio import file_sha256

    return {"budget": budget, "seeds": seeds, "code": file_sha256(REPO / "autodistil_evo" / "export" / "finetune.py"),
            "data": file_sha256(REPO / "autodistil_evo" / "data.py")}


def _finetune_cache(model_dir, budget: dict) -> Path:
    # Another budget than the default gets a file of its own (the default's name is kept, so its caches stay valid).
    suffix = "" if budget == FINETUNE else "-" + re.sub(r"[^\w.=-]", "_", "-".join(f"{k}{v}" for k, v in sorted(budget.items())))
    return Path(model_dir) / f"finetune-seeds{suffix}.json" if Path(model_dir).is_dir() else \
        WORK / "teacher-finetune" / f"{str(model_dir).replace(':', '_')}{suffix}.json"


def cached_finetune(model_dir, budget: dict = FINETUNE, seeds: int = SEEDS) -> dict | None:
    """The result of `finetune_seeds` if it is cached for this budget, seeds and fine-tuning code."""
    import json

    cache = _finetune_cache(model_dir, budget)
    kept = json.loads(cache.read_text()) if cache.is_file() else {}
    return kept["result"] if kept.get("key") == finetune_key(budget, seeds) else None


def finetune_seeds(model_dir, budget: dict = FINETUNE, seeds: int = SEEDS, threads: int | None = None) -> dict:
    """`finetune --seeds N` on the embedded task; the result JSON, cached beside the model."""
    import json

    kept = cached_finetune(model_dir, budget, seeds)
    if kept is not None:
        return kept
    done = subprocess.run(
        [sys.executable, "-m", "autodistil_evo.cli", "finetune", str(model_dir), "--json", "--seed", "0",
         "--seeds", str(seeds), *budget_flags(budget)],
        cwd=REPO, capture_output=True, text=True, env=_env(threads),
    )
    if done.returncode:  # its progress and error were captured: show why it failed
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"finetune {model_dir} failed (exit {done.returncode})")
    result = json.loads(done.stdout)
    cache = _finetune_cache(model_dir, budget)
    cache.parent.mkdir(parents=True, exist_ok=True)
    from autodistil_evo.fileio import write_json

    write_json(cache, {"key": finetune_key(budget, seeds), "result": result})  # atomic, as Serving's key file
    return result


def prefetch(models, budget: dict = FINETUNE, seeds: int = SEEDS) -> None:
    """Fine-tune every model of `models` not yet cached with `budget`, `WORKERS` at a time, the largest
    first; the benchmark's own loop then reads each result from the cache (`accuracy`)."""
    todo = [model for model in by_size(models) if cached_finetune(model, budget, seeds) is None]
    in_parallel(lambda model, threads: finetune_seeds(model, budget, seeds, threads), todo,
                label=f"fine-tunes ({seeds} seeds each)")


def by_size(models) -> list:
    """Distinct models, the largest first (weights on disk; the teacher's spec, no folder, counts as largest)."""
    def size(model):
        weights = Path(model) / "model.safetensors"
        return weights.stat().st_size if weights.is_file() else float("inf")

    return sorted(dict.fromkeys(models), key=size, reverse=True)


def saved_finetune(model_dir, out_dir: Path, budget: dict = FINETUNE, threads: int | None = None) -> tuple:
    """`model_dir` fine-tuned on the embedded task once (seed 0) with `budget` and kept as an HF folder
    (`finetune --save`): a classifier to serve, or the teacher of task distillation. Re-made when the
    budget or the fine-tuning code changed. Returns (folder, whether it was made now)."""
    import json
    import shutil

    from autodistil_evo.fileio import write_json

    key, key_file = finetune_key(budget, 1), Path(out_dir) / "bench-key.json"
    if key_file.is_file() and json.loads(key_file.read_text()) == key:
        return Path(out_dir), False
    shutil.rmtree(out_dir, ignore_errors=True)
    cli("finetune", model_dir, *budget_flags(budget), "--seed", 0, "--save", out_dir, threads=threads)
    write_json(key_file, key)  # atomic: a half-written key would stop the next run
    return Path(out_dir), True


def accuracy(model, budget: dict = FINETUNE) -> dict:
    """Test accuracy over the bench fine-tuning seeds (a student folder or the teacher's spec); the
    standard error is the seeds' std over the square root of their number."""
    acc = finetune_seeds(model, budget)["test"]["accuracy"]
    return {"accuracy_mean": acc["mean"], "accuracy_std": acc["std"], "accuracy_sem": acc["std"] / len(acc["values"]) ** 0.5,
            "accuracy_seeds": acc["values"]}


def alone_dir(arch: dict, steps: int, recipe: str = BENCH_RECIPE) -> Path:
    """One folder per (recipe, arch, steps): an arch two benchmarks distil alone is distilled once."""
    from autodistil_evo.spaces.space import Arch

    return WORK / "alone" / f"{Path(recipe).stem}-{Arch.from_dict(arch).key()}-{steps}"


def distil_alone(arch: dict, steps: int, recipe: str = BENCH_RECIPE, threads: int | None = None) -> dict:
    """Distil one arch by itself (a one-arch space: its sandwich is the arch alone) with the recipe's
    data and schedule, then its held-out distillation loss on the recipe's proxy set (a one-arch
    `evolve`). Returns {"run", "heldout_loss", "seconds"}."""
    import json
    import time

    import yaml

    folder = alone_dir(arch, steps, recipe)
    run, search = folder / "run", folder / "search"
    result_file = folder / "result.json"
    if result_file.is_file():
        kept = json.loads(result_file.read_text())
        if kept.get("arch") == arch and kept.get("steps") == steps:
            return kept
    folder.mkdir(parents=True, exist_ok=True)
    from autodistil_evo.distill.recipe import load_recipe

    base = load_recipe(REPO / recipe)
    space = yaml.safe_load(open(base.resolve(base.space)))
    space["name"] = f"alone-{folder.name}"
    space["subspaces"] = {"alone": {k: [v] for k, v in arch.items()}}
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    write_recipe(recipe, folder / "recipe.yaml", space=str(folder / "space.yaml"), steps=steps)
    start = time.perf_counter()
    cli("train", "--recipe", folder / "recipe.yaml", "--out", run, "--resume", threads=threads)
    seconds = time.perf_counter() - start
    cli("evolve", run, "--out", search, "--population", 2, "--generations", 1, "--resume", threads=threads)
    loss = json.loads((search / "history.jsonl").read_text().splitlines()[0])["loss"]
    kept = {"arch": arch, "steps": steps, "run": str(run), "heldout_loss": loss, "seconds": seconds, "threads": threads}
    from autodistil_evo.fileio import write_json

    write_json(result_file, kept)  # atomic: it is the marker that the distillation is done
    return kept


def kendall_with_ci(x, y, resamples: int = 2000, seed: int = 0) -> tuple:
    """Kendall tau (b) of x vs y and a percentile bootstrap 95% interval over the points; NaN where
    it is undefined (every student at one accuracy, as when none has learned beyond the majority class)."""
    import numpy as np
    from scipy.stats import kendalltau

    x, y = np.asarray(x, float), np.asarray(y, float)
    tau = float(kendalltau(x, y)[0])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        if len(set(x[i])) > 1 and len(set(y[i])) > 1:
            draws.append(kendalltau(x[i], y[i])[0])
    if not draws:
        return tau, [float("nan"), float("nan")]
    low, high = np.percentile(draws, [2.5, 97.5])
    return tau, [float(low), float(high)]


def difference(a: dict | None, b: dict | None) -> dict | None:
    """a minus b mean accuracy in points, with the two seed spreads combined; None where either is missing."""
    if a is None or b is None:
        return None
    return {"points": 100 * (a["accuracy_mean"] - b["accuracy_mean"]),
            "spread": 100 * (a["accuracy_std"] ** 2 + b["accuracy_std"] ** 2) ** 0.5}


def paired_difference(a: dict | None, b: dict | None) -> dict | None:
    """a minus b test accuracy in points, paired by fine-tuning seed (both ran seeds 0..n-1, and a seed
    fixes the head and the batches): the mean of the per-seed differences and its standard error."""
    if a is None or b is None:
        return None
    diffs = [100 * (x - y) for x, y in zip(a["accuracy_seeds"], b["accuracy_seeds"])]
    mean = sum(diffs) / len(diffs)
    sd = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5 if len(diffs) > 1 else float("nan")
    return {"points": mean, "sem": sd / len(diffs) ** 0.5, "per_seed": diffs}


def format_difference(d: dict | None) -> str:
    return "-" if d is None else f"{d['points']:+.1f} ± {d['spread']:.1f}"


TEACHER = "embedded:all-MiniLM-L6-v2"
# Hand-designed shapes of the embedded teacher's space, at about 70%, 45% and 20% of its FLOPs: the
# shapes a user would pick by hand, and the FLOPs budgets the searched students are compared at.
HAND = [
    ("BERT proportions, 5/6 width", "base", {"layers": 6, "heads": 10, "hidden": 320, "mlp_ratio": 4.0}),
    ("BERT proportions, 5 layers, 3/4 width", "base", {"layers": 5, "heads": 9, "hidden": 288, "mlp_ratio": 4.0}),
    ("uniformly scaled down", "small", {"layers": 6, "heads": 8, "hidden": 160, "mlp_ratio": 4.0}),
]


def hand_budgets() -> list:
    """The hand shapes of `HAND` with their FLOPs as the search counts them (the bench space's sequence
    length): [(label, subspace, arch, flops)], the FLOPs budgets students are compared at."""
    from autodistil_evo.distill.recipe import load_recipe
    from autodistil_evo.spaces import Arch, count_flops, load_space

    recipe = load_recipe(REPO / BENCH_RECIPE)
    space = load_space(recipe.space_file())
    dims = space.dims(recipe.teacher_shape())
    return [(label, subspace, arch, count_flops(Arch.from_dict(arch), dims, space.seq_len)) for label, subspace, arch in HAND]


def select_under(search_dir, flops_budget):
    """The min-proxy-loss student of a search's front with FLOPs <= `flops_budget` (`select --json`), or None."""
    import json

    out = subprocess.run([sys.executable, "-m", "autodistil_evo.cli", "select", str(search_dir), "--where",
                          f"flops<={flops_budget}", "--pick", "min-loss", "--json"], cwd=REPO, capture_output=True, text=True)
    rows = json.loads(out.stdout) if out.returncode == 0 else []
    return next((r for r in rows if r["picked"]), None)


def pick_arch(pick: dict) -> dict:
    """The arch JSON (genes only) of a `select --json` row."""
    from autodistil_evo.spaces.space import GENES

    arch = pick["arch"] if "arch" in pick else pick
    return {g: arch[g] for g in GENES}


def searched_pick(run, search, flops_budget) -> tuple | None:
    """The searched student under `flops_budget`, exported: ({"id", "flops", "proxy_loss"}, its folder)."""
    pick = select_under(search, flops_budget)
    if pick is None:
        return None
    model = export_arch(run, pick["subspace"], pick_arch(pick))
    return {"id": pick["id"], "flops": pick["flops"], "proxy_loss": pick["loss"]}, model


def scored(found: tuple | None) -> dict | None:
    """A `searched_pick` with its fine-tuned accuracy (cached after `prefetch`)."""
    return None if found is None else {**found[0], **accuracy(found[1])}
