"""What closes the paper's headline gap, and what it costs.

The best searched student at <= 1/3 of the teacher's FLOPs (the bench K=3 search's min-proxy-loss
student under that budget) distilled alone for longer and longer: the bench recipe's data and
schedule (warm-up, decay to zero) stretched to each number of steps. Each is fine-tuned with the
bench budget over 3 seeds; reported: held-out distillation loss, wall time of the distillation,
fine-tuned test accuracy and the gap to the teacher under the same fine-tuning budget. The second
lever: task-specific distillation, the longest-distilled student fine-tuned with the bench budget
on the labels mixed with the soft predictions of the teacher fine-tuned with that budget
(`finetune --teacher`, seed 0; same rows, epochs, lr and seeds). Two more levers were measured
once and are not re-run, for `make bench`'s time (their numbers are in CHANGELOG): fine-tuning on
every training example (3.4x the bench budget's rows; about 36 min, most of it the teacher's three
seeds) and an lr per model picked on dev (18 one-seed fine-tunes).

`--hidden-weights 1,10` measures a fifth lever instead, outside `make bench` (its numbers are in
CHANGELOG and benchmarks/results/closing_gap_hidden.json): the same student distilled alone for the
bench recipe's steps with hidden-state distillation added (the recipe's `hidden_weight`), beside the
relations-only row."""

import argparse
import json
from pathlib import Path

from common import (
    BENCH_RECIPE,
    BENCH_SEARCH,
    FINETUNE,
    REPO,
    SEEDS,
    TEACHER,
    WORK,
    accuracy,
    difference,
    distil_alone,
    ensure_bench_search,
    export_arch,
    prefetch,
    recipe_steps,
    saved_finetune,
    select_under,
    write_recipe,
)
from report import command, describe_finetune, machine, markdown_table, write_results, write_section

from autodistil_evo.spaces.space import GENES

# The soft-target weight and temperature of the second lever (finetune's defaults).
KD = {"kd_alpha": 0.5, "kd_temperature": 2.0}


def alone_rows(arch: dict, alones: list, teacher_flops: int, labels: list) -> tuple:
    """Each distillation's student exported and fine-tuned with the bench budget, beside the teacher:
    (teacher, one row per distillation, led by its label, students)."""
    students = [export_arch(alone["run"], "alone", arch) for alone in alones]
    prefetch([TEACHER, *students])
    teacher = {"flops": teacher_flops, **accuracy(TEACHER)}
    rows = []
    for label, alone, student in zip(labels, alones, students):
        row = {**label, "distil_seconds": alone["seconds"], "heldout_loss": alone["heldout_loss"], **accuracy(student)}
        row["gap"] = difference(teacher, row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return teacher, rows, students


def hidden_recipe(weight: float) -> str:
    """The bench recipe with `hidden_weight: weight`, written beside the cache under its own name, so its
    distillation is cached as any other (0: the bench recipe itself)."""
    if not weight:
        return BENCH_RECIPE
    return write_recipe(BENCH_RECIPE, WORK / "alone" / f"{Path(BENCH_RECIPE).stem}-hidden{weight:g}.yaml",
                        hidden_weight=weight)


def hidden_lever(pick: dict, arch: dict, teacher_flops: int, weights: list):
    """The student distilled alone for the bench recipe's steps at each `hidden_weight` (0: relations
    only, the first row of the section), fine-tuned with the bench budget; printed and written to
    closing_gap_hidden.json."""
    steps = recipe_steps(BENCH_RECIPE)
    alones = [distil_alone(arch, steps, hidden_recipe(w)) for w in weights]  # timed: one at a time
    teacher, rows, _ = alone_rows(arch, alones, teacher_flops, [{"hidden_weight": w, "steps": steps} for w in weights])
    write_results("closing_gap_hidden", {"student": {"id": pick["id"], "flops": pick["flops"], "arch": arch},
                                         "teacher": teacher, "finetune_budget": FINETUNE, "seeds": SEEDS, "rows": rows})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", help="distillation steps, comma-separated (default: 1x, 3x and 9x the bench recipe's)")
    parser.add_argument("--hidden-weights", help="instead of the section: the hidden-state lever at these recipe "
                        "hidden_weight values, comma-separated (0, relations only, is added)")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")] if args.steps else [n * recipe_steps(BENCH_RECIPE) for n in (1, 3, 9)]
    ensure_bench_search()
    teacher_flops = json.loads((BENCH_SEARCH / "pareto.json").read_text())["teacher"]["flops"]
    pick = select_under(BENCH_SEARCH, teacher_flops / 3)
    arch = {g: pick[g] for g in GENES}
    if args.hidden_weights:
        weights = [float(w) for w in args.hidden_weights.split(",")]
        return hidden_lever(pick, arch, teacher_flops, [0.0, *(w for w in weights if w)])
    alones = [distil_alone(arch, n) for n in steps]  # timed: one at a time
    teacher, rows, students = alone_rows(arch, alones, teacher_flops, [{"steps": n} for n in steps])
    student = students[-1]
    tutor, _ = saved_finetune(TEACHER, WORK / "teacher-finetuned")
    kd = {"steps": rows[-1]["steps"], **KD, "student": accuracy(student, {**FINETUNE, "teacher": str(tutor.relative_to(REPO)), **KD})}
    kd["gap"] = difference(teacher, kd["student"])
    print(json.dumps(kd), flush=True)
    write_results("closing_gap", {"student": {"id": pick["id"], "flops": pick["flops"], "arch": arch}, "teacher": teacher,
                                  "finetune_budget": FINETUNE, "seeds": SEEDS, "rows": rows, "task_distillation": kd})
    table = markdown_table(
        ["distillation steps (alone)", "wall min", "held-out distillation loss", "test accuracy", "gap to teacher, points"],
        [(r["steps"], f"{r['distil_seconds'] / 60:.1f}", f"{r['heldout_loss']:.4f}",
          f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}", f"{r['gap']['points']:.1f} ± {r['gap']['spread']:.1f}")
         for r in rows])
    spread = lambda a: f"{a['accuracy_mean']:.3f} ± {a['accuracy_std']:.3f}"  # noqa: E731
    kd_table = markdown_table(
        ["fine-tuning", f"student ({kd['steps']} steps alone)", "gap to teacher, points"],
        [("labels", spread(rows[-1]), f"{rows[-1]['gap']['points']:.1f} ± {rows[-1]['gap']['spread']:.1f}"),
         ("labels + teacher's soft targets", spread(kd["student"]), f"{kd['gap']['points']:.1f} ± {kd['gap']['spread']:.1f}")])
    first, last = rows[0], rows[-1]
    write_section(
        "closing_gap",
        f"## Closing the headline gap: longer distillation\n\nMachine: {machine()}. Student {pick['id']} "
        f"({pick['flops'] / teacher_flops:.0%} of the teacher's FLOPs; the uniform space's best searched student at <= 1/3), "
        "distilled alone with `recipes/bench.yaml`'s data and schedule stretched to each number of steps (batch 16 x 64); "
        f"fine-tuned with {describe_finetune(FINETUNE)}, seeds 0-{SEEDS - 1}; teacher {teacher['accuracy_mean']:.3f} ± "
        f"{teacher['accuracy_std']:.3f} under the same fine-tuning.\n\nCommand: `{command()}`\n\n{table}\n\n"
        f"From {first['steps']} to {last['steps']} steps ({last['steps'] / first['steps']:.0f}x the distillation, "
        f"{last['distil_seconds'] / 60:.0f} min here) the gap moves from {first['gap']['points']:.1f} to "
        f"{last['gap']['points']:.1f} points.\n\n### Second lever: task-specific distillation\n\n"
        f"The {last['steps']}-step student fine-tuned with the bench budget on the labels mixed with the soft "
        f"predictions of the teacher fine-tuned with that budget (seed 0, as the first of the teacher's seeds above: test accuracy {teacher['accuracy_seeds'][0]:.3f}): "
        f"`finetune --teacher`, loss (1 - a) x cross-entropy + a x T^2 x KL at a = {KD['kd_alpha']}, "
        f"T = {KD['kd_temperature']}; seeds 0-{SEEDS - 1}:\n\n{kd_table}\n\nTwo more levers were measured once and are no "
        "longer re-run, to keep `make bench` short (CHANGELOG has their numbers): fine-tuning the student and the teacher "
        "on every training example of the task (3.4x the rows) and an lr per model picked on dev.\n",
    )


if __name__ == "__main__":
    main()
