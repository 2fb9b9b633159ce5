"""AutoDistil's ablation: K=3 sub-spaces (three SuperLMs) vs K=1 (one SuperLM over the union).

Same teacher, data and total number of training steps (K=3: 3 x S, K=1: 3S); same search budget
(K=1's population is 3x, so distinct evaluations match). Compares the global fronts
(hypervolume with one reference point) and, at three matched FLOPs budgets, the fine-tuned
accuracy (mean ± std over seeds) of the best-proxy student under each. `--budget bench` (default)
uses recipes/bench.yaml; `--budget quickstart` the quickstart recipe, so the trend between the two
budgets is measured by the same script; the section shows every budget measured so far.
"""

import argparse
import json

from common import (
    BENCH_RECIPE,
    BENCH_RUN,
    BENCH_SEARCH,
    BENCH_SEARCH_SIZE,
    FINETUNE,
    QUICKSTART_RECIPE,
    SEEDS,
    WORK,
    cli,
    difference,
    ensure_run,
    format_difference,
    hand_budgets,
    prefetch,
    recipe_steps,
    scored,
    searched_pick,
)
from report import RESULTS, command, commit, describe_finetune, machine, markdown_table, write_results, write_section

from autodistil_evo.search.pareto import hypervolume, objective_matrix

OBJECTIVES = ["loss", "flops"]
BUDGETS = {
    "quickstart": {"recipe": QUICKSTART_RECIPE, "steps": recipe_steps(QUICKSTART_RECIPE), "k3_run": WORK / "quickstart-run",
                   "k3_search": WORK / "quickstart-k3-search", "population": 12, "generations": 4},
    "bench": {"recipe": BENCH_RECIPE, "steps": recipe_steps(BENCH_RECIPE), "k3_run": BENCH_RUN, "k3_search": BENCH_SEARCH, **BENCH_SEARCH_SIZE},
}
# The FLOPs budgets the students are compared at, as fractions of the teacher's: at the bench budget the
# hand shapes' (`hand_budgets`), so its K=3 picks are equal compute's searched students, fine-tuned once.
FRACTIONS = {"quickstart": (0.05, 0.2, 0.6), "bench": None}


def measure(name: str) -> dict:
    b = BUDGETS[name]
    k3_run = ensure_run(b["k3_run"], b["recipe"])
    k1_run = WORK / f"{name}-k1-run"
    if not (k1_run / "all-sizes" / "superlm.json").is_file():
        cli("train", "--recipe", b["recipe"], "--space", "spaces/minilm-l6-k1.yaml", "--out", k1_run,
            "--steps", 3 * b["steps"], "--save-every", b["steps"], "--resume")
    searches = {"K=3": b["k3_search"], "K=1": WORK / f"{name}-k1-search"}
    cli("evolve", k3_run, "--out", searches["K=3"], "--population", b["population"], "--generations", b["generations"], "--resume")
    cli("evolve", k1_run, "--out", searches["K=1"], "--population", 3 * b["population"], "--generations", b["generations"],
        "--resume")
    fronts = {k: json.loads((d / "pareto.json").read_text()) for k, d in searches.items()}
    evaluated = {k: len({(r["subspace"], r["key"]) for r in map(json.loads, (d / "history.jsonl").read_text().splitlines())})
                 for k, d in searches.items()}
    union = fronts["K=3"]["front"] + fronts["K=1"]["front"]
    reference = list(1.1 * objective_matrix(union, OBJECTIVES).max(axis=0))
    teacher_flops = fronts["K=3"]["teacher"]["flops"]
    runs = {"K=3": k3_run, "K=1": k1_run}
    budgets = [f * teacher_flops for f in FRACTIONS[name]] if FRACTIONS[name] else [b[3] for b in hand_budgets()]
    picks = {(k, b): searched_pick(runs[k], searches[k], b) for b in budgets for k in runs}
    prefetch([found[1] for found in picks.values() if found])
    rows = []
    for budget in budgets:
        row = {"fraction_of_teacher": budget / teacher_flops, "flops_budget": budget}
        for k in runs:
            row[k] = scored(picks[k, budget])
            if row[k] is not None:
                print(name, k, f"{budget:.3g}", row[k]["id"], row[k]["accuracy_mean"], flush=True)
        rows.append(row)
    return {
        "recipe": b["recipe"], "steps_per_subspace": b["steps"], "k1_steps": 3 * b["steps"],
        "fronts": {k: {"distinct_evaluations": evaluated[k], "front_size": len(fronts[k]["front"]),
                       "hypervolume": hypervolume(fronts[k]["front"], OBJECTIVES, reference)} for k in searches},
        "rows": rows,
    }


def _hv_gap(m: dict) -> float:
    return m["fronts"]["K=3"]["hypervolume"] - m["fronts"]["K=1"]["hypervolume"]


def _acc_gaps(m: dict) -> list:
    """K=3 minus K=1 mean test accuracy (points) at each FLOPs budget, with the seed spreads combined."""
    return [f"{r['fraction_of_teacher']:.0%}: {format_difference(difference(r['K=3'], r['K=1']))}" for r in m["rows"]]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", choices=list(BUDGETS), default="bench")
    args = parser.parse_args()
    measured = {}
    kept = RESULTS / "k_subspaces.json"
    if kept.is_file():
        measured = json.loads(kept.read_text()).get("budgets", {})
    measured[args.budget] = {**measure(args.budget), "commit": commit()}
    write_results("k_subspaces", {"finetune_budget": FINETUNE, "seeds": SEEDS, "budgets": measured})

    def cell(entry):
        if entry is None:
            return "no student"
        return f"{entry['id']}: loss {entry['proxy_loss']:.3f}, acc {entry['accuracy_mean']:.3f} ± {entry['accuracy_std']:.3f}"

    parts = []
    for name, m in measured.items():
        fronts = markdown_table(
            ["", "SuperLMs", "training steps", "distinct evaluations", "front size", "HV (shared reference)"],
            [(k, 3 if k == "K=3" else 1, m["k1_steps"], f["distinct_evaluations"], f["front_size"], f"{f['hypervolume']:.4f}")
             for k, f in m["fronts"].items()])
        rows = markdown_table(["FLOPs budget", "K=3: best-proxy student", "K=1: best-proxy student"],
                              [(f"{r['fraction_of_teacher']:.0%} of teacher ({r['flops_budget'] / 1e9:.2f} GFLOPs)",
                                cell(r["K=3"]), cell(r["K=1"])) for r in m["rows"]])
        at = f", measured at {m['commit'][:7]}" if m.get("commit") else ""
        parts.append(f"### {name} budget ({m['recipe']}, {m['steps_per_subspace']} steps per K=3 SuperLM{at})\n\n{fronts}\n\n{rows}\n")
    trend = markdown_table(
        ["budget", "HV: K=3 minus K=1", "accuracy points, K=3 minus K=1, per FLOPs budget"],
        [(name, f"{_hv_gap(m):+.4f}", ", ".join(_acc_gaps(m))) for name, m in measured.items()])
    parts.append(f"### Trend between the budgets\n\nPositive = K=3 ahead (AutoDistil's claim).\n\n{trend}\n")
    write_section(
        "k_subspaces",
        f"## K=3 sub-spaces vs K=1\n\nMachine: {machine()}. Embedded teacher and corpus; K=3 = `spaces/minilm-l6.yaml`, "
        f"K=1 = `spaces/minilm-l6-k1.yaml` (one SuperLM, 3x the steps). Fine-tuning {describe_finetune(FINETUNE)}, seeds 0-{SEEDS - 1}.\n\n"
        f"Command: `{command()}`\n\n" + "\n".join(parts),
    )


if __name__ == "__main__":
    main()
