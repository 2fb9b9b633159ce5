"""AutoDistil's ablation at small scale: K=3 sub-spaces (three SuperLMs) vs K=1 (one SuperLM over the union).

Same teacher, data and total number of training steps (K=3: 3 x S, K=1: 3S); same search budget
(distinct evaluations). Compares the global fronts (hypervolume with one reference point) and,
at three matched FLOPs budgets, the fine-tuned accuracy of the best-proxy student under each.
"""

import argparse
import json
import subprocess
import sys

from common import REPO, WORK, cli, ensure_run, export_arch, finetune_accuracy
from report import command, machine, markdown_table, write_section

from autodistil_evo.search.pareto import hypervolume, objective_matrix

BUDGET = {"max_train": 3000, "epochs": 1, "batch_size": 32, "lr": 1e-4, "max_len": 64}
OBJECTIVES = ["loss", "flops"]


def select_under(search_dir, flops_budget):
    out = subprocess.run([sys.executable, "-m", "autodistil_evo.cli", "select", str(search_dir), "--where",
                          f"flops<={flops_budget}", "--pick", "min-loss", "--json"], cwd=REPO, capture_output=True, text=True)
    rows = json.loads(out.stdout) if out.returncode == 0 else []
    return next((r for r in rows if r["picked"]), None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps-per-subspace", type=int, default=40)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--generations", type=int, default=4)
    args = parser.parse_args()
    k3_run = ensure_run(WORK / "quickstart-run")
    k1_run = WORK / "k1-run"
    if not (k1_run / "all-sizes" / "superlm.json").is_file():
        cli("train", "--recipe", "recipes/quickstart.yaml", "--space", "spaces/minilm-l6-k1.yaml", "--out", k1_run,
            "--steps", 3 * args.steps_per_subspace, "--save-every", args.steps_per_subspace, "--resume")
    searches = {"K=3": WORK / "k3-search", "K=1": WORK / "k1-search"}
    cli("evolve", k3_run, "--out", searches["K=3"], "--population", args.population, "--generations", args.generations, "--resume")
    cli("evolve", k1_run, "--out", searches["K=1"], "--population", 3 * args.population, "--generations", args.generations, "--resume")

    fronts = {k: json.loads((d / "pareto.json").read_text()) for k, d in searches.items()}
    evaluated = {k: len({(r["subspace"], r["key"]) for r in map(json.loads, (d / "history.jsonl").read_text().splitlines())})
                 for k, d in searches.items()}
    union = fronts["K=3"]["front"] + fronts["K=1"]["front"]
    reference = list(1.1 * objective_matrix(union, OBJECTIVES).max(axis=0))
    hv = {k: hypervolume(f["front"], OBJECTIVES, reference) for k, f in fronts.items()}
    teacher_flops = fronts["K=3"]["teacher"]["flops"]

    rows = []
    for fraction in (0.05, 0.2, 0.6):
        budget = fraction * teacher_flops
        row = [f"{fraction:.0%} of teacher ({budget / 1e9:.2f} GFLOPs)"]
        for k, run in (("K=3", k3_run), ("K=1", k1_run)):
            pick = select_under(searches[k], budget)
            if pick is None:
                row.append("no student")
                continue
            arch = {g: pick[g] for g in ("layers", "heads", "hidden", "mlp_ratio")}
            model = export_arch(run, pick["subspace"], arch, WORK / "students" / f"{k}-{pick['id']}")
            accuracy = finetune_accuracy(model, BUDGET)["test_accuracy"]
            row.append(f"{pick['id']}: loss {pick['loss']:.3f}, acc {accuracy:.3f}")
            print(k, fraction, pick["id"], accuracy, flush=True)
        rows.append(row)
    front_table = markdown_table(
        ["", "SuperLMs", "training steps", "distinct evaluations", "front size", "HV (shared reference)"],
        [(k, 3 if k == "K=3" else 1, 3 * args.steps_per_subspace, evaluated[k], len(fronts[k]["front"]), f"{hv[k]:.4f}")
         for k in ("K=3", "K=1")],
    )
    budget_table = markdown_table(["FLOPs budget", "K=3: best-proxy student", "K=1: best-proxy student"], rows)
    write_section(
        "k_subspaces",
        f"## K=3 sub-spaces vs K=1\n\nMachine: {machine()}. Embedded teacher and corpus, quickstart recipe; "
        f"K=3 = `spaces/minilm-l6.yaml` ({args.steps_per_subspace} steps per SuperLM), K=1 = `spaces/minilm-l6-k1.yaml` "
        f"(one SuperLM, {3 * args.steps_per_subspace} steps). Fine-tuning budget {BUDGET}, seed 0.\n\n"
        f"Command: `{command()}`\n\n{front_table}\n\n{budget_table}\n",
    )


if __name__ == "__main__":
    main()
