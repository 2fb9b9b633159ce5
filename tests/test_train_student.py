"""train-student: one picked student trained further alone; training FLOPs counted and recorded."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from helpers import assert_no_absolute_paths, run_cli
from safetensors.torch import load_file
from test_export import reload_without_package

from autodistil_evo.distill.artifact import load_superlm
from autodistil_evo.spaces import Arch, count_flops

CLI = [sys.executable, "-m", "autodistil_evo.cli"]
LAYERWISE_ARCH = {"subspace": "big", "layers": 2, "heads": [4, 3], "hidden": 48, "mlp_ratio": [2.0, 1.5]}


def train_student(*args, fault=None, expect=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    if fault:
        env["AUTODISTIL_EVO_FAULT"] = fault
    proc = subprocess.run([*CLI, "train-student", *map(str, args)], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return proc


def rows(out):
    return [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]


def pick(search_dir) -> str:
    return json.loads((search_dir / "pareto.json").read_text())["front"][0]["id"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_search, recipe_file):
    """A front pick of the tiny search trained alone for 6 steps from its SuperLM subnet."""
    out = tmp_path_factory.mktemp("student") / "full"
    train_student(tiny_search / "search", "--id", pick(tiny_search / "search"), "--recipe", recipe_file, "--out", out)
    return out


def test_step_zero_student_equals_its_superlm_subnet(tmp_path, layerwise_run, recipe_file):
    run_cli("train-student", layerwise_run, "--arch", json.dumps(LAYERWISE_ARCH), "--recipe", recipe_file, "--steps", 0,
            "--out", tmp_path / "s")
    arch = Arch.from_dict(LAYERWISE_ARCH)
    source, student = load_superlm(layerwise_run / "big"), load_superlm(tmp_path / "s" / "student")
    assert student.subspace.largest().layers == 2 and student.subspace.per_layer == ("heads", "mlp_ratio")
    ids = torch.randint(1000, 2000, (3, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    source.superlm.set_active(arch)
    student.superlm.set_active(arch)
    with torch.no_grad():
        expected, got = source.superlm(ids, mask)[0], student.superlm(ids, mask)[0]
    assert (expected - got)[mask.bool()].abs().max().item() <= 1e-5
    exported = load_file(tmp_path / "s" / "model" / "model.safetensors")
    assert exported and (tmp_path / "s" / "model" / "config.json").is_file()
    card = (tmp_path / "s" / "model" / "README.md").read_text()
    assert "trained alone for 0 steps from its SuperLM subnet" in card


@pytest.mark.slow
def test_trained_student_learns_counts_flops_and_exports(trained, tiny_search, tmp_path):
    metrics = rows(trained)
    assert [m["step"] for m in metrics] == list(range(1, 7)) and all(len(m["archs"]) == 1 for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    # FLOPs: per step, 4 sequences x (the teacher's 2 layers forward + 3x the student's forward), at seq len 32, each
    # stopped after its last layer's Q/K/V as relation distillation runs them
    source = load_superlm(tiny_search / "run" / json.loads((tiny_search / "search" / "pareto.json").read_text())["front"][0]["subspace"])
    arch = Arch.from_dict(json.loads((trained / "model" / "autodistil_provenance.json").read_text())["arch"])
    teacher = source.teacher_shape
    per_step = 4 * (count_flops(teacher.arch(), teacher.dims(), 32, stop_at_last_qkv=True)
                    + 3 * count_flops(arch, source.space.dims(teacher), 32, stop_at_last_qkv=True))
    assert [m["train_flops"] for m in metrics] == [per_step * s for s in range(1, 7)]
    meta = json.loads((trained / "student" / "superlm.json").read_text())
    assert meta["train_flops"] == 6 * per_step and meta["student"]["init"] == "superlm"
    provenance = json.loads((trained / "model" / "autodistil_provenance.json").read_text())
    assert provenance["train_flops_parts"] == {"superlm": source.meta["train_flops"], "student": 6 * per_step}
    assert source.meta["train_flops"] == 0  # the tiny search's SuperLMs were written untrained (--steps 0)
    assert provenance["train_flops"] == 6 * per_step and provenance["trained_alone"]["steps"] == 6
    assert "its own further training" in (trained / "model" / "README.md").read_text()
    # the export reloads where this package cannot be imported
    ids = torch.randint(1000, 2000, (2, 12))
    mask = torch.ones_like(ids)
    hidden = reload_without_package(tmp_path, trained / "model", ids, mask, provenance["model_class"])
    student = load_superlm(trained / "student")
    student.superlm.set_active(arch)
    with torch.no_grad():
        assert (student.superlm(ids, mask)[0] - hidden).abs().max().item() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("fault, code, logged", [("train-step:4", -9, 4), ("train-step:3:SIGTERM", 143, 4)])
def test_killed_or_stopped_then_resume_equals_uninterrupted(tmp_path, trained, tiny_search, recipe_file, fault, code,
                                                           logged):
    out = tmp_path / "killed"
    args = [tiny_search / "search", "--id", pick(tiny_search / "search"), "--recipe", recipe_file, "--out", out]
    train_student(*args, fault=fault, expect=code)
    assert len(rows(out)) == logged and not (out / "model").exists()
    train_student(*args, "--resume")
    for a, b in zip(rows(out), rows(trained)):
        assert a["step"] == b["step"] and a["train_flops"] == b["train_flops"]
        assert abs(a["loss"] - b["loss"]) <= 1e-6
    wa, wb = load_file(out / "model" / "model.safetensors"), load_file(trained / "model" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6


@pytest.mark.slow
def test_from_an_exported_folder_and_from_the_teacher(tmp_path, trained, tiny_search, recipe_file):
    """An exported student continues from its own SuperLM; --init teacher starts from the teacher's slices."""
    assert_no_absolute_paths(trained / "model")
    run_cli("train-student", trained / "model", "--recipe", recipe_file, "--steps", 2, "--out", tmp_path / "again")
    first = rows(tmp_path / "again")[0]
    assert first["loss"] < rows(trained)[0]["loss"]  # it starts where the 6 steps ended, not from scratch
    meta = json.loads((tmp_path / "again" / "student" / "superlm.json").read_text())
    assert meta["student"]["superlm_train_flops"] == json.loads((trained / "student" / "superlm.json").read_text())["train_flops"]
    run_cli("train-student", tiny_search / "search", "--id", pick(tiny_search / "search"), "--init", "teacher",
            "--recipe", recipe_file, "--steps", 1, "--out", tmp_path / "alone")
    meta = json.loads((tmp_path / "alone" / "student" / "superlm.json").read_text())
    assert meta["student"]["init"] == "teacher" and meta["student"]["superlm_train_flops"] == 0


def test_dry_run_plans_the_student_alone(tmp_path, tiny_search, recipe_file):
    out = run_cli("train-student", tiny_search / "search", "--id", pick(tiny_search / "search"), "--recipe", recipe_file,
                  "--out", tmp_path / "plan", "--dry-run")
    assert "training plan" in out and not (tmp_path / "plan").exists()


@pytest.mark.parametrize("args, message", [
    (["--id", "nope"], "no student with id 'nope'"),
    (["--arch", json.dumps({**LAYERWISE_ARCH, "hidden": 40})], "--arch.hidden: 40 is not among"),
    (["--init", "random"], "'--init'"),
    ([], "not a student folder exported by autodistil-evo"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_search, tiny_teacher, recipe_file, args, message):
    source = {"--id": tiny_search / "search", "--arch": tiny_search / "run"}.get(args[0] if args else None, tiny_teacher)
    if args and args[0] == "--init":
        args = ["--id", pick(tiny_search / "search"), *args]
        source = tiny_search / "search"
    out = run_cli("train-student", source, *args, "--recipe", recipe_file, "--out", tmp_path / "out", expect=2)
    assert message in out
    assert not (tmp_path / "out").exists()
