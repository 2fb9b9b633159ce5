"""Searched students vs hand-designed shapes at the same FLOPs, and the paper's headline.

At each hand-designed shape's FLOPs: (a) the searched student (`select --where flops<=<its FLOPs>
--pick min-loss`) of the bench K=3 search over the uniform space and, with --layerwise, of a
search over the per-layer space; (b) the hand shape distilled alone with the same per-arch budget
(a one-arch space, the bench recipe's steps) — what a user would do by hand. All fine-tuned with the bench budget over 3 seeds (mean ± std).
Headline (AutoDistil: up to 3x less compute for a negligible accuracy loss): the best-proxy
searched student at <= 1/3 of the teacher's FLOPs vs the teacher, same fine-tuning budget.
"""

import argparse
import json
import subprocess
import sys

from common import (
    BENCH_RECIPE,
    BENCH_SEARCH_SIZE,
    FINETUNE,
    REPO,
    SEEDS,
    WORK,
    accuracy,
    cli,
    difference,
    distil_alone,
    ensure_bench_search,
    ensure_run,
    export_arch,
    format_difference,
    prefetch,
    recipe_steps,
)
from report import command, machine, markdown_table, write_results, write_section

from autodistil_evo.spaces import Arch, count_flops, load_space
from autodistil_evo.spaces.space import GENES

HAND = [
    ("BERT proportions, 5/6 width", "base", {"layers": 6, "heads": 10, "hidden": 320, "mlp_ratio": 4.0}),
    ("BERT proportions, 5 layers, 3/4 width", "base", {"layers": 5, "heads": 9, "hidden": 288, "mlp_ratio": 4.0}),
    ("uniformly scaled down", "small", {"layers": 6, "heads": 8, "hidden": 160, "mlp_ratio": 4.0}),
]
TEACHER = "embedded:all-MiniLM-L6-v2"


def select_under(search_dir, flops_budget):
    out = subprocess.run([sys.executable, "-m", "autodistil_evo.cli", "select", str(search_dir), "--where",
                          f"flops<={flops_budget}", "--pick", "min-loss", "--json"], cwd=REPO, capture_output=True, text=True)
    rows = json.loads(out.stdout) if out.returncode == 0 else []
    return next((r for r in rows if r["picked"]), None)


def searched_pick(run, search, flops_budget) -> tuple | None:
    """The searched student under `flops_budget`, exported: ({"id", "flops", "proxy_loss"}, its folder)."""
    pick = select_under(search, flops_budget)
    if pick is None:
        return None
    arch = pick["arch"] if "arch" in pick else {g: pick[g] for g in GENES}
    model = export_arch(run, pick["subspace"], {g: arch[g] for g in GENES})
    return {"id": pick["id"], "flops": pick["flops"], "proxy_loss": pick["loss"]}, model


def scored(found: tuple | None) -> dict | None:
    """A `searched_pick` with its fine-tuned accuracy (cached after `prefetch`)."""
    return None if found is None else {**found[0], **accuracy(found[1])}


def _students(rows, headline, searches) -> list:
    """Every student measured: each row's columns and each search's headline pick."""
    students = [e for r in rows for e in (r["hand"], r.get("searched"), r.get("searched_per_layer")) if e]
    return students + [headline[name] for name in searches if headline[name]]


def _gap(teacher, student) -> float:
    """Points the student is below the teacher."""
    return difference(teacher, student)["points"]


def _cell(entry) -> str:
    if entry is None:
        return "no student"
    return f"{entry['id']} ({entry['flops'] / 1e9:.3f} GFLOPs): {entry['accuracy_mean']:.3f} ± {entry['accuracy_std']:.3f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--alone-steps", type=int, default=recipe_steps(BENCH_RECIPE),
                        help="steps for a hand shape distilled alone (the bench recipe's)")
    parser.add_argument("--layerwise", action=argparse.BooleanOptionalAction, default=True,
                        help="also train and search the per-layer space at the bench budget")
    args = parser.parse_args()
    run, search = ensure_bench_search()
    searches = {"uniform": (run, search)}
    if args.layerwise:
        lw_run = ensure_run(WORK / "bench-layerwise-run", BENCH_RECIPE, extra=("--space", "spaces/minilm-l6-layerwise.yaml"))
        lw_search = WORK / "bench-layerwise-search"
        cli("evolve", lw_run, "--out", lw_search, "--population", BENCH_SEARCH_SIZE["population"],
            "--generations", BENCH_SEARCH_SIZE["generations"], "--resume")
        searches["per-layer"] = (lw_run, lw_search)
    space = load_space("spaces/minilm-l6.yaml")
    # Everything trained, searched and exported first; then every fine-tune at once (`prefetch`).
    hands = []
    for label, subspace, arch in HAND:
        alone = distil_alone(arch, args.alone_steps)
        hands.append((label, subspace, arch, export_arch(alone["run"], "alone", arch)))
    teacher_flops = json.loads((search / "pareto.json").read_text())["teacher"]["flops"]  # the headline: <= 1/3 of it
    budgets = [count_flops(Arch.from_dict(arch), space.dims(), space.seq_len) for _, _, arch, _ in hands] + [teacher_flops / 3]
    picks = {(name, b): searched_pick(r, s, b) for name, (r, s) in searches.items() for b in budgets}
    prefetch([TEACHER, *(model for *_, model in hands), *(found[1] for found in picks.values() if found)])
    rows = []
    for (label, subspace, arch, hand_alone), flops in zip(hands, budgets):
        hand_id = f"{subspace}-{Arch.from_dict(arch).key()}"
        row = {
            "label": label,
            "flops_budget": flops,
            "hand": {"id": hand_id, "flops": flops, "distilled": f"alone, {args.alone_steps} steps", **accuracy(hand_alone)},
        }
        for name in searches:
            row["searched" if name == "uniform" else "searched_per_layer"] = scored(picks[name, flops])
        print(json.dumps(row), flush=True)
        rows.append(row)

    headline = {"teacher": {"flops": teacher_flops, **accuracy(TEACHER)}}
    for name in searches:
        student = scored(picks[name, teacher_flops / 3])
        if student is not None:
            student["gap_points"] = _gap(headline["teacher"], student)
            student["flops_ratio"] = teacher_flops / student["flops"]
        headline[name] = student
    for row in rows:
        row["searched_minus_hand"] = {name: difference(row.get(key), row["hand"]) for name, key in
                                      (("uniform", "searched"), ("per-layer", "searched_per_layer")) if key in row}
    students = _students(rows, headline, searches)
    close = [e for e in students if _gap(headline["teacher"], e) <= 1.0]
    headline["within_1_point"] = min(close, key=lambda e: e["flops"]) if close else None
    write_results("vs_handpicked", {"finetune_budget": FINETUNE, "seeds": SEEDS, "alone_steps": args.alone_steps,
                                    "rows": rows, "headline": headline})

    header = ["hand-designed shape (FLOPs budget)", "hand shape distilled alone", "searched, uniform space"] + (["searched, per-layer space"] if args.layerwise else [])
    table = markdown_table(header, [
        (f"{r['label']}: {r['hand']['id']} ({r['flops_budget'] / 1e9:.3f} GFLOPs)",
         f"{r['hand']['accuracy_mean']:.3f} ± {r['hand']['accuracy_std']:.3f}",
         _cell(r["searched"]), *([_cell(r["searched_per_layer"])] if args.layerwise else [])) for r in rows])
    t = headline["teacher"]
    head_rows = [("teacher all-MiniLM-L6-v2", f"{t['flops'] / 1e9:.3f}", "1.00x",
                  f"{t['accuracy_mean']:.3f} ± {t['accuracy_std']:.3f}", "")]
    for name in searches:
        s = headline[name]
        if s is not None:
            head_rows.append((f"searched ({name}): {s['id']}", f"{s['flops'] / 1e9:.3f}", f"{1 / s['flops_ratio']:.2f}x",
                              f"{s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f}", f"{s['gap_points']:.1f}"))
    differences = markdown_table(["FLOPs budget", *(f"searched ({n}) minus hand, points" for n in searches)], [
        (f"{r['flops_budget'] / 1e9:.3f} GFLOPs", *(format_difference(r["searched_minus_hand"].get(n)) for n in searches)) for r in rows])
    cheapest = headline["within_1_point"]
    best = max(students, key=lambda e: e["accuracy_mean"])
    closing = (f"The cheapest student measured here within 1 point of the teacher: {cheapest['id']} at "
               f"{cheapest['flops'] / t['flops']:.0%} of its FLOPs ({cheapest['accuracy_mean']:.3f})." if cheapest else
               f"No student measured here is within 1 point of the teacher; the closest, {best['id']} at "
               f"{best['flops'] / t['flops']:.0%} of its FLOPs, is {_gap(t, best):.1f} "
               f"points below.")
    head_table = markdown_table(["model", "GFLOPs", "of teacher", f"test accuracy ({SEEDS} seeds)", "gap (points)"], head_rows)
    write_section(
        "vs_handpicked",
        f"## Searched vs hand-designed students\n\nMachine: {machine()}. Bench run (`recipes/bench.yaml`) and its "
        f"searches (population {BENCH_SEARCH_SIZE['population']} x {BENCH_SEARCH_SIZE['generations']} generations); "
        f"test accuracy after fine-tuning on the embedded fresh/rotten task ({FINETUNE}), mean ± std over seeds "
        f"0-{SEEDS - 1}.\n\nCommand: `{command()}`\n\n{table}\n\n"
        f"Difference of means (± the two seeds' std combined; a difference inside it is noise):\n\n{differences}\n\n"
        f"### The paper's headline: <= 1/3 of the teacher's FLOPs\n\n{head_table}\n\n{closing}\n",
    )


if __name__ == "__main__":
    main()
