"""`autodistil-evo train-student`: continue task-agnostic distillation of one picked student, alone.

The student is a search pick, an arch of a run, or a folder this package exported. It trains in a
SuperLM built for it alone (`SubSpace.of_arch`: its one sub-space `student`), with the recipe's data,
loss, engine, precision and checkpoints, as `train` does; so `OUT_DIR` is a run directory
(`OUT_DIR/student/`) and the exported student lands in `OUT_DIR/model/`. It starts from its SuperLM
subnet's weights (`init="superlm"`), or from first-k slices of the teacher (`init="teacher"`: the
same arch distilled alone, the do-it-yourself baseline made with the same tool).
"""

from dataclasses import replace
from pathlib import Path

import torch

from autodistil_evo.distill.recipe import Recipe
from autodistil_evo.distill.trainer import StudentStart, TrainSettings, plan, run_training
from autodistil_evo.export.export import PROVENANCE, export_trained, resolve_source, total_training_flops
from autodistil_evo.fileio import check_output_dir, portable_path, read_json
from autodistil_evo.spaces import SubSpace

INITS = ("superlm", "teacher")
SUBSPACE = "student"


def student_start(source, student_id=None, arch_json=None, init="superlm", run_dir=".") -> tuple:
    """(the student's one-sub-space SearchSpace, StudentStart, name) for `source`; checks everything. The
    origin's paths are relative to `run_dir`, the run that trains it."""
    from autodistil_evo.errors import UserError

    if init not in INITS:
        raise UserError(f"--init: {init!r} is not one of {', '.join(INITS)}")
    trained, arch, _ = resolve_source(source, student_id, arch_json, folder_ok=True)
    name = student_id
    if name is None and (Path(source) / PROVENANCE).is_file():
        name = read_json(Path(source) / PROVENANCE, "student provenance").get("id")
    name = name or f"{trained.subspace.name}-{arch.key()}"
    space = replace(trained.space, subspaces={SUBSPACE: SubSpace.of_arch(SUBSPACE, arch)})
    origin = {
        "source": portable_path(source, run_dir),
        "id": name,
        "superlm": portable_path(trained.path, run_dir),
        "superlm_sha256": trained.meta.get("sha256"),
        "teacher": trained.meta["teacher"]["spec"],
        # The SuperLM's training is what a student started from it cost; from the teacher it cost nothing.
        "superlm_train_flops": total_training_flops(trained.meta) if init == "superlm" else 0,
        "teacher_layers": trained.teacher_layers(arch),  # from the SuperLM subnet or the teacher, the same layers
    }
    order = trained.meta.get("hidden_order") if init == "superlm" else None
    start = StudentStart(arch, init, trained.superlm if init == "superlm" else None, trained.teacher_shape, origin,
                         torch.tensor(order) if order else None)
    return space, start, name


def train_student(source, out_dir, recipe: Recipe, settings: TrainSettings, student_id=None, arch_json=None,
                  init="superlm", teacher_spec=None, console=None, dry_run=False) -> dict:
    """Train the student alone into OUT_DIR/student and export it to OUT_DIR/model. Returns a summary
    (with `plan` only for a dry run, `interrupted` when stopped by Ctrl-C)."""
    space, start, name = student_start(source, student_id, arch_json, init, out_dir)
    subspace = space.subspace(SUBSPACE)
    if dry_run:
        return {"plan": plan(recipe, space, [subspace], settings.steps, recipe.world_size, start.arch)}
    out_dir = check_output_dir(out_dir, "output directory")
    results = run_training(recipe, space, SUBSPACE, out_dir, teacher_spec or start.origin["teacher"], settings, console,
                           start)
    result = results[-1]
    if result["interrupted"]:
        return result
    from autodistil_evo.distill.artifact import load_superlm

    model_dir = Path(out_dir) / "model"
    provenance = export_trained(load_superlm(Path(out_dir) / SUBSPACE), start.arch.strided(), model_dir,
                                f"{name}-{init}-{result['step']}", log=console.print if console else print)
    return {**result, "model_dir": str(model_dir), "id": provenance["id"], "train_flops_total": provenance["train_flops"],
            "train_flops_parts": provenance["train_flops_parts"]}
