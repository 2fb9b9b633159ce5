"""Nothing lost, nothing trusted blindly: Ctrl-C, failed writes, locks, a bad-input suite, safe loading."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_SPACE, tiny_recipe
from helpers import run_cli

PACKAGE = REPO / "autodistil_evo"


def snapshot(path: Path) -> dict:
    if not path.exists():
        return {}
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_search):
    return tiny_search


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_writes_a_checkpoint_and_exits_with_its_code(tmp_path, recipe_file, signum):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autodistil_evo.cli", "train", "--recipe", str(recipe_file), "--out", str(run),
         "--subspace", "small", "--steps", "400", "--save-every", "1000"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    metrics = run / "small" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out + err
    assert f"stopped by {signum.name}" in err and "--resume" in err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    checkpoints = sorted((run / "small" / "checkpoints").iterdir())
    assert checkpoints and checkpoints[-1].name == f"step-{steps[-1]:08d}"  # nothing after the last step is lost
    assert not (run / "small" / "superlm.json").exists() and not (run / ".lock").exists()


def test_second_stop_signal_ends_the_process_at_once():
    code = ("import os, signal, time\n"
            "from autodistil_evo.stopping import StopRequest\n"
            "with StopRequest() as stop:\n"
            "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.1)\n"
            "    print('asked', stop.signum == signal.SIGTERM, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
            "    print('still running')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM and proc.stdout == "asked True\n", proc.stdout + proc.stderr


def _enospc(kind: str, path):
    """A full disk as the OS reports it, or as safetensors wraps it."""
    from safetensors import SafetensorError

    if kind == "safetensors":
        return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    return OSError(28, "No space left on device", str(path))


@pytest.mark.parametrize("kind", ["os", "safetensors"])
def test_failed_checkpoint_write_keeps_the_previous(tmp_path, recipe_file, monkeypatch, kind):
    from autodistil_evo.distill import checkpoint

    run = tmp_path / "run"
    run_cli("train", "--recipe", recipe_file, "--out", run, "--subspace", "small", "--steps", 3, "--save-every", 3)
    before = snapshot(run / "small" / "checkpoints")
    real_save = checkpoint.save_file

    def full_disk(tensors, path, *args, **kwargs):
        if "optimizer" in str(path):
            raise _enospc(kind, path)
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    out = run_cli("train", "--recipe", recipe_file, "--out", run, "--subspace", "small", "--steps", 6,
                  "--save-every", 3, "--resume", expect=2)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out, out
    assert re.search(r"checkpoints: cannot write the checkpoint of step 6 \(No space left on device\); it needs about "
                     r"[\d.]+ MB, [\d,.]+ MB free there; earlier checkpoints are intact", errors[0]), errors[0]
    assert snapshot(run / "small" / "checkpoints") == before  # the step-3 checkpoint, untouched, and no debris
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    run_cli("train", "--recipe", recipe_file, "--out", run, "--subspace", "small", "--steps", 6, "--save-every", 3, "--resume")
    assert json.loads((run / "small" / "superlm.json").read_text())["step"] == 6


def test_failed_search_state_write_keeps_the_previous_generation(tmp_path, trained, monkeypatch):
    from autodistil_evo.search import evolve

    args = ["--population", 6, "--eval-samples", 8, "--generations", 3]
    run_cli("evolve", trained / "run", "--out", tmp_path / "full", *args)
    real_write = evolve.write_json

    def full_disk(path, obj):
        if isinstance(obj, dict) and obj.get("generation") == 2:
            raise OSError(28, "No space left on device", str(path))
        return real_write(path, obj)

    monkeypatch.setattr(evolve, "write_json", full_disk)
    out = run_cli("evolve", trained / "run", "--out", tmp_path / "search", *args, expect=2)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write the search state after generation 2 (No space left on device)" in errors[0]
    assert "the state of the generation before is intact" in errors[0]
    states = sorted((tmp_path / "search" / "state").iterdir())
    assert [json.loads(p.read_text())["generation"] for p in states] == [1]  # whole, and no debris beside it
    monkeypatch.setattr(evolve, "write_json", real_write)
    run_cli("evolve", trained / "run", "--out", tmp_path / "search", *args, "--resume")
    for name in ("history.jsonl", "pareto.json"):
        assert (tmp_path / "search" / name).read_text() == (tmp_path / "full" / name).read_text()


def test_second_writer_is_refused_and_stale_lock_taken_over(tmp_path, recipe_file, trained):
    run = tmp_path / "run"
    run.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(str(owner.pid))
        out = run_cli("train", "--recipe", recipe_file, "--out", run, "--steps", 0, expect=2)
        assert f"in use by process {owner.pid}" in out
        search = tmp_path / "search"
        search.mkdir()
        (search / ".lock").write_text(str(owner.pid))
        assert "in use by process" in run_cli("evolve", trained / "run", "--out", search, "--eval-samples", 8, expect=2)
    finally:
        owner.kill()
        owner.wait()
    out = run_cli("train", "--recipe", recipe_file, "--out", run, "--steps", 0)  # the owner is dead now
    assert "taking over stale lock" in out
    assert (run / "big" / "superlm.json").exists() and not (run / ".lock").exists()


# ---------------------------------------------------------------------------------------------
# The bad-input suite: each case gives one line naming the file or field, exit 2, no traceback,
# and leaves the output directory exactly as it was.


def _space(tmp, change):
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    change(data)
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _write(tmp, name, content):
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _recipe(tmp, ctx, **overrides):
    r = yaml.safe_load(ctx["recipe"].read_text())
    return tiny_recipe(tmp / "recipe.yaml", r["teacher"]["name"], r["space"], r["corpus"][0], **overrides)


def _copy_run(tmp, ctx, damage):
    import shutil

    run = tmp / "run-copy"
    shutil.copytree(ctx["trained"] / "run", run)
    damage(run)
    return run


def _copy_search(tmp, ctx, damage):
    import shutil

    search = tmp / "search-copy"
    shutil.copytree(ctx["trained"] / "search", search)
    damage(search)
    return search


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _patch_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


CASES = {
    # search spaces
    "space: malformed YAML": (lambda t, c: ["space", "stats", _write(t, "s.yaml", "name: [oops\n")], "malformed YAML", None),
    "space: unknown key": (lambda t, c: ["space", "stats", _space(t, lambda d: d.update(extra=1))], "unknown key(s) extra", None),
    "space: wrong type": (lambda t, c: ["space", "stats", _space(t, lambda d: d["subspaces"]["big"].update(heads=["x"]))],
                          "subspaces.big.heads: 'x' is not a positive integer", None),
    "space: empty choices": (lambda t, c: ["space", "stats", _space(t, lambda d: d["subspaces"]["small"].update(hidden=[]))],
                             "subspaces.small.hidden: empty choice list", None),
    "space: larger than teacher": (lambda t, c: ["space", "stats", _space(t, lambda d: d["subspaces"]["big"].update(hidden=[128])),
                                                 "--teacher", c["teacher"]], "hidden: 128 > teacher's hidden 64", None),
    "space: missing file": (lambda t, c: ["space", "stats", t / "none.yaml"], "search-space file not found", None),
    # corpora and teachers
    "corpus: missing": (lambda t, c: ["info", "--teacher", c["teacher"], "--corpus", t / "none.txt"], "corpus file not found", None),
    "corpus: empty": (lambda t, c: ["info", "--teacher", c["teacher"], "--corpus", _write(t, "e.txt", "")], "corpus file is empty", None),
    "corpus: binary": (lambda t, c: ["info", "--teacher", c["teacher"], "--corpus", _write(t, "b.parquet", b"\x00\xff" * 50)],
                       "cannot read as parquet", None),
    "teacher: unsupported family": (lambda t, c: ["info", "--teacher", _gpt_folder(t)], "is not supported; supported teacher families", None),
    # recipes and training
    "recipe: malformed YAML": (lambda t, c: ["train", "--recipe", _write(t, "r.yaml", "teacher: {\n"), "--out", t / "out"],
                               "malformed YAML", "out"),
    "recipe: unknown key": (lambda t, c: ["train", "--recipe", _recipe(t, c, colour=1), "--out", t / "out"], "unknown key(s) colour", "out"),
    "recipe: wrong type": (lambda t, c: ["train", "--recipe", _recipe(t, c, micro_batch="big"), "--out", t / "out"],
                           "micro_batch: 'big' is not a positive integer", "out"),
    "recipe: ZeRO stage 2": (lambda t, c: ["train", "--recipe", _recipe(t, c, deepspeed=str(_write(t, "ds.json", '{"zero_optimization": {"stage": 2}}'))),
                                           "--out", t / "out", "--steps", 1], "zero_optimization.stage 2 is not supported", "out"),
    "recipe: DeepSpeed JSON broken": (lambda t, c: ["train", "--recipe", _recipe(t, c, deepspeed=str(_write(t, "ds.json", "{"))),
                                                    "--out", t / "out", "--steps", 1], "DeepSpeed config is not valid JSON", "out"),
    "train: out is a file": (lambda t, c: ["train", "--recipe", c["recipe"], "--out", _write(t, "out", "x"), "--steps", 0],
                             "run directory is a file", "out"),
    "train: resume changed problem": (lambda t, c: ["train", "--recipe", _recipe(t, c, seq_len=16), "--out", c["killed"],
                                                    "--subspace", "small", "--resume"], "the run differs in: corpus_fingerprint, seq_len", "killed"),
    # search
    "evolve: truncated SuperLM": (lambda t, c: ["evolve", _copy_run(t, c, lambda r: _truncate(r / "big" / "superlm.safetensors")),
                                                "--out", t / "out"], "does not match the sha256", "out"),
    "evolve: SuperLM JSON schema": (lambda t, c: ["evolve", _copy_run(t, c, lambda r: _patch_json(r / "big" / "superlm.json", schema=99)),
                                                  "--out", t / "out"], "unsupported schema 99", "out"),
    "evolve: state schema": (lambda t, c: ["evolve", c["trained"] / "run", "--out",
                                           _copy_search(t, c, lambda s: _patch_json(s / "state" / "big.json", schema=7)),
                                           "--population", 6, "--generations", 3, "--eval-samples", 8, "--resume"],
                             "search state schema 7", "search-copy"),
    "evolve: constraint syntax": (lambda t, c: ["evolve", c["trained"] / "run", "--out", t / "out", "--constraint", "flops<<1"],
                                  "expected NAME<=NUMBER", "out"),
    "evolve: constraint name": (lambda t, c: ["evolve", c["trained"] / "run", "--out", t / "out", "--constraint", "speed<=1"],
                                "unknown name 'speed'", "out"),
    "evolve: impossible constraint": (lambda t, c: ["evolve", c["trained"] / "run", "--out", t / "out", "--constraint", "flops<=1",
                                                    "--eval-samples", 4], "flops<=1", None),
    "evolve: resume changed problem": (lambda t, c: ["evolve", c["trained"] / "run", "--out", _copy_search(t, c, lambda s: None),
                                                     "--population", 5, "--eval-samples", 8, "--resume"],
                                       "the problem differs in: population", "search-copy"),
    "evolve: out is a file": (lambda t, c: ["evolve", c["trained"] / "run", "--out", _write(t, "out", "x")], "search directory is a file", "out"),
    # students
    "select: bad where": (lambda t, c: ["select", c["trained"] / "search", "--where", "flops<=lots"], "expected NAME<=NUMBER", None),
    "select: no pareto.json": (lambda t, c: ["select", t], "no pareto.json", None),
    "export: non-empty out": (lambda t, c: ["export", c["trained"] / "run", "--arch",
                                            '{"subspace": "big", "layers": 1, "heads": 3, "hidden": 48, "mlp_ratio": 1.5}',
                                            "--out", _nonempty(t)], "not empty; pass --force", "out"),
    "export: bad arch": (lambda t, c: ["export", c["trained"] / "run", "--arch", '{"subspace": "big", "layers": "two"}',
                                       "--out", t / "out"], "--arch: missing field(s)", "out"),
    "train-student: unknown id": (lambda t, c: ["train-student", c["trained"] / "search", "--id", "nope", "--recipe", c["recipe"],
                                                "--out", t / "out"], "no student with id 'nope'", "out"),
    "train-student: not a student folder": (lambda t, c: ["train-student", c["teacher"], "--recipe", c["recipe"], "--out", t / "out"],
                                            "not a student folder exported by autodistil-evo", "out"),
}


def _gpt_folder(tmp):
    folder = tmp / "gpt-folder"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    return folder


def _nonempty(tmp):
    out = tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    return out


@pytest.fixture(scope="module")
def context(tmp_path_factory, trained, recipe_file, tiny_teacher):
    killed = tmp_path_factory.mktemp("killed") / "run"
    run_cli("train", "--recipe", recipe_file, "--out", killed, "--subspace", "small", "--steps", 3, "--save-every", 3)
    return {"trained": trained, "recipe": recipe_file, "teacher": tiny_teacher, "killed": killed}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, context):
    make_args, message, guarded = CASES[name]
    args = make_args(tmp_path, context)
    guarded_path = None
    if guarded == "killed":
        guarded_path = context["killed"]
    elif guarded:
        guarded_path = tmp_path / guarded
    before = snapshot(guarded_path) if guarded_path else None
    out = run_cli(*args, expect=2)
    assert message in out, out
    assert "Traceback" not in out
    assert len([line for line in out.splitlines() if line.startswith("error:")]) == 1
    if guarded_path:
        assert snapshot(guarded_path) == before, f"{guarded_path} changed"


def test_bad_input_suite_size_is_documented():
    page = (REPO / "docs" / "reliability.md").read_text()
    match = re.search(r"bad-input suite of (\d+) cases", page)
    assert match and int(match.group(1)) == len(CASES)


# ---------------------------------------------------------------------------------------------


def test_no_unsafe_loading_in_the_package():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\bimport pickle\b|\bpickle\.|\bdill\b|\bcloudpickle\b", code):
                offenders.append(f"{path}:{number}: pickle")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path}:{number}: torch.load without weights_only=True")
            if re.search(r"(?<![\w.])eval\(|(?<![\w.])exec\(", code):
                offenders.append(f"{path}:{number}: eval/exec")
    assert not offenders, offenders


# ---------------------------------------------------------------------------------------------
# SIGKILL at seeded random points (a step, a checkpoint write, an evaluation, a generation
# boundary): --resume always succeeds and ends equal to an uninterrupted run.


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory, recipe_file, tiny_search):
    from test_train import train

    base = tmp_path_factory.mktemp("reference")
    train(base / "run", recipe_file, "--subspace", "small")
    run_cli("evolve", tiny_search / "run", "--out", base / "search", "--generations", 3, "--population", 6, "--eval-samples", 8)
    return base


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])  # 0: checkpoint-write:6 + search-generation:1; 1: train-step:2 + search-eval:3
def test_random_kill_points_then_resume(seed, tmp_path, recipe_file, tiny_search, reference_runs):
    import random

    from test_evolve import evolve_subprocess, outputs
    from test_train import assert_same_run, train

    rng = random.Random(seed)
    point = rng.choice([f"train-step:{k}" for k in range(1, 6)] + ["checkpoint-write:3", "checkpoint-write:6"])
    train(tmp_path / "run", recipe_file, "--subspace", "small", fault=point, expect=-9)
    train(tmp_path / "run", recipe_file, "--subspace", "small", "--resume")
    assert_same_run(tmp_path / "run", reference_runs / "run", "small")

    point = rng.choice([f"search-eval:{k}" for k in range(2, 8)] + [f"search-generation:{g}" for g in (1, 2)])
    args = ["--generations", 3, "--population", 6, "--eval-samples", 8]
    evolve_subprocess(tiny_search / "run", tmp_path / "search", *args, fault=point, expect=-9)
    evolve_subprocess(tiny_search / "run", tmp_path / "search", *args, "--resume")
    assert outputs(tmp_path / "search") == outputs(reference_runs / "search"), point
