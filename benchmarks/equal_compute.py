"""Students at equal compute: the tool's path against the do-it-yourself paths, at three FLOPs budgets.

Budgets: the hand shapes of `common.HAND` (about 70%, 45% and 20% of the teacher's FLOPs). At each:
- `layer-drop`: the teacher keeping its bottom k layers, k the depth whose FLOPs are nearest the
  budget; no training (what a user tries first);
- `hand-alone`: the hand shape distilled alone from the teacher (`train-student --init teacher`);
- `searched-superlm`: the bench K=3 search's min-proxy-loss student under the budget, straight
  from its SuperLM (the paper's way);
- `searched-train-student`: that student trained further alone from its SuperLM weights;
- `searched-alone`: the searched arch distilled alone from the teacher (is it the shape or the weights?);
  a diagnostic, not a goal row: `make bench` leaves it out (`--no-diagnostics`) and `make bench-studies`
  adds it to the cached rows.

Compute: training FLOPs as the trainer counts them (teacher forward + 3x each trained member's
forward); a row's `train_flops` is what made that student (its SuperLM's whole training, shared with
the students taken from it, plus its own further training). The tool's path (the bench SuperLMs + `--student-steps` of `train-student` per pick) is
the measured total; each alone path gets the same step count per student, chosen so that the three
hand shapes together cost at least that total: the tool's path never gets more compute than the
do-it-yourself one. All fine-tuned with the bench budget over the same seeds; differences are
paired by seed, with their standard errors.

`--space FILE`, `--rewire` and `--order-hidden` measure levers of the tool's path, each in its own section:
the same recipe's SuperLMs trained and searched on another space (`make bench-studies` runs
`spaces/minilm-l6-wide.yaml`, which adds the teacher's full width at reduced depth), with
importance-ordered slicing of heads and FFN, or with importance-ordered hidden channels; the
do-it-yourself rows are the same shapes.
"""

import argparse
import json
import math
from pathlib import Path

from common import (
    BENCH_RECIPE,
    FINETUNE,
    REPO,
    SEEDS,
    SMOKE,
    TEACHER,
    WORK,
    accuracy,
    cli,
    ensure_bench_search,
    hand_budgets,
    in_parallel,
    lever_tag,
    paired_difference,
    pick_arch,
    prefetch,
    recipe_steps,
    searched_pick,
)
from report import command, describe_finetune, machine, markdown_table, write_results, write_section

from autodistil_evo.distill.recipe import load_recipe
from autodistil_evo.distill.trainer import step_flops, teacher_tap_flops
from autodistil_evo.fileio import read_jsonl
from autodistil_evo.spaces import Arch, count_flops, load_space

TOOL, DIY = "searched-train-student", ("layer-drop", "hand-alone")


def layer_drop(layers: int) -> Path:
    """The teacher keeping its bottom `layers` layers, saved as an HF folder (no training)."""
    from autodistil_evo.teacher import load_teacher

    out = WORK / "layer-drop" / f"bottom-{layers}"
    if (out / "config.json").is_file():
        return out
    teacher = load_teacher(TEACHER)
    model = teacher.model
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    teacher.tokenizer.save_pretrained(out)
    return out


def train_student(source, out: Path, steps: int, init: str, student_id=None, arch=None, threads=None) -> tuple:
    """`train-student` (skipped when its exported model is there from the same steps); (model folder, provenance)."""
    provenance = out / "model" / "autodistil_provenance.json"
    kept = json.loads(provenance.read_text()) if provenance.is_file() else None
    if not (kept and kept.get("trained_alone", {}).get("steps") == steps):
        which = ["--id", student_id] if student_id else ["--arch", json.dumps(arch)]
        cli("train-student", source, *which, "--init", init, "--recipe", BENCH_RECIPE, "--steps", steps, "--out", out,
            "--resume", threads=threads)
        kept = json.loads(provenance.read_text())
    return out / "model", kept


def train_students(jobs: list) -> list:
    """`train_student(**job)` for every job, two at a time on a core each (`in_parallel`), the costliest
    (steps x FLOPs) first; the results in the order given."""
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].pop("cost"))
    done = in_parallel(lambda i, threads: train_student(**jobs[i], threads=threads), order, label="train-student runs")
    return [done[order.index(i)] for i in range(len(jobs))]


def superlm_flops(run: Path) -> int:
    """The training FLOPs of a run's SuperLMs together, as their superlm.json records them."""
    total = 0
    for meta_file in sorted(run.glob("*/superlm.json")):
        flops = json.loads(meta_file.read_text()).get("train_flops")
        if flops is None:
            raise SystemExit(f"{meta_file}: no train_flops recorded (a SuperLM from before compute accounting); retrain it")
        total += flops
    return total


def subspace_bests(search: Path, budgets: list) -> dict:
    """Per sub-space, the searched arch of lowest proxy loss under each budget ({"key", "flops", "loss"} or None):
    which sub-space the pick came from, and how close the others were (a space lever's question)."""
    rows = read_jsonl(search / "history.jsonl")
    bests = {}
    for sub in dict.fromkeys(r["subspace"] for r in rows):
        under = [[r for r in rows if r["subspace"] == sub and r.get("feasible", True) and r["flops"] <= flops] for *_, flops in budgets]
        bests[sub] = [min(({"key": r["key"], "flops": r["flops"], "loss": r["loss"]} for r in u), key=lambda b: b["loss"])
                      if u else None for u in under]
    return bests


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--student-steps", type=int, default=recipe_steps(BENCH_RECIPE),
                        help="train-student steps per searched pick (the tool's further training)")
    parser.add_argument("--space", help="search this space file instead of the bench recipe's (a lever of the "
                        "tool's path: its own SuperLMs, search and section, the do-it-yourself rows the same)")
    parser.add_argument("--rewire", action="store_true", help="the lever of importance-ordered slicing (`rewire: true`)")
    parser.add_argument("--order-hidden", action="store_true",
                        help="the lever of importance-ordered hidden channels (`order_hidden: true`)")
    parser.add_argument("--diagnostics", action=argparse.BooleanOptionalAction, default=True,
                        help="also the searched arch distilled alone (shape or weights?); `make bench` leaves it to "
                             "`make bench-studies`, whose run adds it to the cached rows")
    args = parser.parse_args()
    recipe = load_recipe(BENCH_RECIPE)
    space_file = args.space or str(Path(recipe.space_file()).resolve().relative_to(REPO))
    space = load_space(space_file)
    tag = lever_tag(args.space, args.rewire, args.order_hidden)
    work, section = WORK / f"equal-compute{tag}", "equal_compute" + tag.replace("-", "_")
    lever = " and ".join(x for x in (args.space and f"searched on `{args.space}`", args.rewire and "importance-ordered slicing",
                                     args.order_hidden and "importance-ordered hidden channels") if x)
    dims, shape = space.dims(recipe.teacher_shape()), recipe.teacher_shape()
    teacher_flops = count_flops(shape.arch(), shape.dims(), space.seq_len)
    tap = teacher_tap_flops(shape, recipe.teacher_layer, recipe.seq_len)
    per_step = lambda arch: step_flops([arch], dims, tap, recipe.seq_len, recipe.micro_batch * recipe.accumulation)  # noqa: E731
    run, search = ensure_bench_search(args.space, args.rewire, args.order_hidden)
    budgets = hand_budgets()

    # The tool's path: the SuperLMs, then each pick trained further.
    picks = {}
    for label, _, _, flops in budgets:
        found = searched_pick(run, search, flops)
        if found is None:
            raise SystemExit(f"no searched student under {flops:.3g} FLOPs ({label})")
        picks[flops] = found
    searched = {f: pick_arch(json.loads((found[1] / "autodistil_provenance.json").read_text())["arch"])
                for f, found in picks.items()}
    # Compute: the SuperLMs plus each pick's further training (the trainer's own per-step count), and
    # the do-it-yourself steps that make its three students cost at least that total.
    shared = superlm_flops(run)
    tool_total = shared + sum(args.student_steps * per_step(Arch.from_dict(a)) for a in searched.values())
    alone_steps = math.ceil(tool_total / sum(per_step(Arch.from_dict(arch)) for _, _, arch, _ in budgets))
    if SMOKE:
        alone_steps = min(alone_steps, recipe_steps(BENCH_RECIPE))
    depth_flops = {k: count_flops(Arch(k, shape.heads, shape.hidden, shape.ffn / shape.hidden), shape.dims(), space.seq_len)
                   for k in range(1, shape.layers + 1)}

    # Independent trainings: each pick trained further (the tool), each hand shape distilled alone from the
    # teacher (do-it-yourself) and, with the diagnostics, each searched arch alone (the shape or the weights?).
    jobs = []
    for _, subspace, arch, flops in budgets:
        found, pick = picks[flops], Arch.from_dict(searched[flops])
        jobs += [{"source": search, "out": work / f"tool-{found[0]['id']}-{args.student_steps}",
                  "steps": args.student_steps, "init": "superlm", "student_id": found[0]["id"],
                  "cost": args.student_steps * per_step(pick)},
                 # A hand shape alone does not depend on the lever: one folder for every section (same steps, same student).
                 {"source": run, "out": WORK / "equal-compute" / f"hand-{subspace}-{Arch.from_dict(arch).key()}-{alone_steps}",
                  "steps": alone_steps, "init": "teacher", "arch": {"subspace": subspace, **arch},
                  "cost": alone_steps * per_step(Arch.from_dict(arch))}]
        if args.diagnostics:
            jobs.append({"source": search, "out": work / f"alone-{found[0]['id']}-{alone_steps}", "steps": alone_steps,
                         "init": "teacher", "student_id": found[0]["id"], "cost": alone_steps * per_step(pick)})
    per_budget = len(jobs) // len(budgets)
    trained = train_students(jobs)
    spent = shared + sum(trained[per_budget * i][1]["train_flops_parts"]["student"] for i in range(len(budgets)))
    if spent != tool_total:  # the trainer counts what it spent: the plan must be what ran
        raise SystemExit(f"the tool's path spent {spent:.4e} training FLOPs, {tool_total:.4e} planned")

    rows, models = [], [TEACHER]
    for i, (label, subspace, arch, flops) in enumerate(budgets):
        found, searched_arch = picks[flops], searched[flops]
        depth = min(depth_flops, key=lambda k: abs(depth_flops[k] - flops))
        (tool_model, tool_provenance), (hand_model, hand_provenance), *alone = trained[per_budget * i : per_budget * (i + 1)]
        entries = {
            "layer-drop": (layer_drop(depth), f"teacher-bottom-{depth}", depth_flops[depth], 0),
            "hand-alone": (hand_model, f"{subspace}-{Arch.from_dict(arch).key()}", flops, hand_provenance["train_flops"]),
            "searched-superlm": (found[1], found[0]["id"], found[0]["flops"],
                                 json.loads((found[1] / "autodistil_provenance.json").read_text())["train_flops"]),
            TOOL: (tool_model, found[0]["id"], found[0]["flops"], tool_provenance["train_flops"]),
        }
        if alone:
            entries["searched-alone"] = (alone[0][0], found[0]["id"], found[0]["flops"], alone[0][1]["train_flops"])
        for path, (model, ident, model_flops, train_flops) in entries.items():
            rows.append({"budget_label": label, "budget_flops": flops, "path": path, "id": ident, "model": str(model),
                         "flops": model_flops, "train_flops": train_flops, "searched_arch": searched_arch})
            models.append(model)
    prefetch(models)
    for row in rows:
        row.update(accuracy(row.pop("model")))
        row["seeds"] = list(range(SEEDS))
    teacher = {"flops": teacher_flops, **accuracy(TEACHER)}
    comparisons = []
    for label, _, _, flops in budgets:
        here = {r["path"]: r for r in rows if r["budget_flops"] == flops}
        for other in (p for p in here if p != TOOL):
            d = paired_difference(here[TOOL], here[other])
            comparisons.append({"budget_flops": flops, "budget_label": label, "a": TOOL, "b": other, **d,
                                "beats": d["points"] > 2 * d["sem"], "loses": d["points"] < -2 * d["sem"]})
    wins = sum(all(c["beats"] for c in comparisons if c["budget_flops"] == b[3] and c["b"] in DIY) for b in budgets)
    losses = any(c["loses"] for c in comparisons if c["b"] in DIY)
    headline_rows = [r for r in rows if r["flops"] <= teacher_flops / 3]
    best = max(headline_rows, key=lambda r: r["accuracy_mean"]) if headline_rows else None
    diy_total = alone_steps * sum(per_step(Arch.from_dict(arch)) for _, _, arch, _ in budgets)
    compute = {"superlms": shared, "tool_total": tool_total, "diy_total": diy_total, "student_steps": args.student_steps,
               "alone_steps": alone_steps}
    bests = subspace_bests(search, budgets)
    from autodistil_evo.data import sentiment_task

    write_results(section, {
        "space": space_file, "rewire": args.rewire, "order_hidden": args.order_hidden,
        "finetune_budget": FINETUNE, "seeds": SEEDS, "test_rows": len(sentiment_task().test), "compute": compute,
        "budgets": [{"label": label, "flops": flops, "hand_arch": {"subspace": sub, **arch}} for label, sub, arch, flops in budgets],
        "rows": rows, "comparisons": comparisons, "teacher": teacher, "subspace_bests": bests,
        "goal": {"budgets_won": wins, "lost_anywhere": losses, "met": wins >= 2 and not losses},
        "headline": None if best is None else {**best, "gap_points": 100 * (teacher["accuracy_mean"] - best["accuracy_mean"])},
    })
    write_section(section, report(rows, comparisons, teacher, compute, wins, losses, best, lever, bests))


def report(rows, comparisons, teacher, compute, wins, losses, best, lever="", bests=None) -> str:
    cell = lambda r: f"{r['id']} ({r['flops'] / 1e9:.2f} GF): {r['accuracy_mean']:.3f} ± {r['accuracy_sem']:.3f}"  # noqa: E731
    budgets = list(dict.fromkeys((r["budget_label"], r["budget_flops"]) for r in rows))
    paths = list(dict.fromkeys(r["path"] for r in rows))  # layer-drop, hand-alone, searched-superlm, the tool; searched-alone only with the diagnostics
    table = markdown_table(["path", *(f"{label} ({flops / 1e9:.2f} GFLOPs)" for label, flops in budgets), "training FLOPs"], [
        (path, *(cell(next(r for r in rows if r["path"] == path and r["budget_flops"] == f)) for _, f in budgets),
         "0" if path == "layer-drop" else " / ".join(f"{r['train_flops']:.2e}" for r in rows if r["path"] == path))
        for path in paths])
    diffs = markdown_table(["tool's path minus", *(f"{flops / 1e9:.2f} GFLOPs" for _, flops in budgets)], [
        (other, *(next(f"{c['points']:+.1f} ± {c['sem']:.1f}" for c in comparisons if c["b"] == other and c["budget_flops"] == f)
                  for _, f in budgets)) for other in paths if other != TOOL])
    best_cell = lambda b: "none" if b is None else f"{b['key']} ({b['flops'] / 1e9:.2f} GF): {b['loss']:.3f}"  # noqa: E731
    by_subspace = "" if not bests else "\n\nThe search's lowest proxy loss per sub-space under each budget (the pick is " \
        "the lowest of all):\n\n" + markdown_table(["sub-space", *(f"{flops / 1e9:.2f} GFLOPs" for _, flops in budgets)],
                                                     [(sub, *map(best_cell, cells)) for sub, cells in bests.items()])
    verdict = ("met" if wins >= 2 and not losses else "not met") + f": the tool's path beats both do-it-yourself rows by " \
              f"more than 2 standard errors at {wins} of 3 budgets" + (", and loses to one by more than that somewhere" if losses else "")
    headline = "" if best is None else (
        f"Best student at <= 1/3 of the teacher's FLOPs: {best['path']} {best['id']} ({best['flops'] / teacher['flops']:.0%} "
        f"of its FLOPs), {best['accuracy_mean']:.3f} against the teacher's {teacher['accuracy_mean']:.3f} "
        f"({100 * (teacher['accuracy_mean'] - best['accuracy_mean']):.1f} points below).")
    return (
        f"## Students at equal compute{f' ({lever})' if lever else ''}\n\n"
        f"Goal {verdict}. {headline}\n\n"
        f"Machine: {machine()}. Command: `{command()}`. Bench SuperLMs (`recipes/bench.yaml`"
        f"{f', {lever}' if lever else ', K=3'}) and their search; "
        f"the tool's path adds {compute['student_steps']} `train-student` steps per pick, {compute['tool_total']:.3e} "
        f"training FLOPs in all ({compute['superlms']:.3e} of them the SuperLMs); each alone path trains "
        f"{compute['alone_steps']} steps per student ({compute['diy_total']:.3e} for the three hand shapes). Test accuracy on "
        f"the embedded fresh/rotten task's test split after fine-tuning ({describe_finetune(FINETUNE)}), mean ± standard error over "
        f"seeds 0-{SEEDS - 1}.\n\n{table}\n\n"
        f"Differences in points, paired by seed (± standard error):\n\n{diffs}{by_subspace}\n"
    )


if __name__ == "__main__":
    main()
