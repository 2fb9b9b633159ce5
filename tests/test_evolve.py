"""Search: exact resume (also after a kill inside a generation), constraints, baselines, 2 processes."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from helpers import run_cli

CLI = [sys.executable, "-m", "autodistil_evo.cli"]
SMALL = ["--population", 6, "--eval-samples", 8]


@pytest.fixture(scope="module")
def run_dir(layerwise_run):
    """Two teacher-initialised per-layer SuperLMs of 40 archs each (training is tested elsewhere)."""
    return layerwise_run


def evolve_subprocess(run_dir, out, *extra, fault=None, expect=0, launcher=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if fault:
        env["AUTODISTIL_EVO_FAULT"] = fault
    command = [*(launcher or [sys.executable, "-m"]), "autodistil_evo.cli", "evolve", run_dir, "--out", out, *extra]
    proc = subprocess.run([str(c) for c in command], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return proc


def outputs(search_dir):
    history = (search_dir / "history.jsonl").read_text()
    pareto = json.loads((search_dir / "pareto.json").read_text())
    return history, pareto


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, run_dir):
    out = tmp_path_factory.mktemp("search") / "full"
    run_cli("evolve", run_dir, "--out", out, "--generations", 4, *SMALL)
    return out


def test_search_outputs(uninterrupted):
    history, pareto = outputs(uninterrupted)
    rows = [json.loads(line) for line in history.splitlines()]
    assert {r["subspace"] for r in rows} == {"big", "small"}
    assert max(r["generation"] for r in rows) == 4
    front = pareto["front"]
    assert front and len({r["id"] for r in front}) == len(front)
    # Nothing evaluated dominates a front member.
    for f in front:
        assert not any(r["loss"] < f["loss"] and r["flops"] < f["flops"] for r in rows)
    assert (uninterrupted / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    csv_lines = (uninterrupted / "pareto.csv").read_text().splitlines()
    assert csv_lines[0].startswith("id,subspace") and len(csv_lines) == len(front) + 1
    hv = json.loads((uninterrupted / "hypervolume.json").read_text())
    for summary in hv:
        assert len(summary["hv"]) == 4 and summary["hv"] == sorted(summary["hv"])  # the archive only grows


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, run_dir, uninterrupted):
    out = tmp_path / "resumed"
    run_cli("evolve", run_dir, "--out", out, "--generations", 2, *SMALL)
    run_cli("evolve", run_dir, "--out", out, "--generations", 4, "--resume", *SMALL)
    assert outputs(out) == outputs(uninterrupted)


def test_default_is_linas_and_an_nsga2_search_resumes_as_nsga2(tmp_path, run_dir, uninterrupted):
    """LINAS is the default; a search directory made with NSGA-II (as every one was before) continues as NSGA-II."""
    assert json.loads((uninterrupted / "search.json").read_text())["algorithm"] == "linas"
    args = ["--subspace", "big", *SMALL]
    run_cli("evolve", run_dir, "--out", tmp_path / "full", "--generations", 3, "--algorithm", "nsga2", *args)
    run_cli("evolve", run_dir, "--out", tmp_path / "old", "--generations", 2, "--algorithm", "nsga2", *args)
    run_cli("evolve", run_dir, "--out", tmp_path / "old", "--generations", 3, "--resume", *args)
    assert json.loads((tmp_path / "old" / "search.json").read_text())["algorithm"] == "nsga2"
    assert outputs(tmp_path / "old") == outputs(tmp_path / "full")
    assert json.loads((tmp_path / "old" / "hypervolume.json").read_text())[0]["algorithm"] == "nsga2"


@pytest.mark.slow
def test_kill_inside_a_generation_then_resume(tmp_path, run_dir, uninterrupted):
    out = tmp_path / "killed"
    # 6 evaluations make generation 1 of "big"; the 7th is inside generation 2.
    evolve_subprocess(run_dir, out, "--generations", 4, *SMALL, fault="search-eval:7", expect=-9)
    state = json.loads((out / "state" / "big.json").read_text())
    assert state["generation"] == 1
    evolve_subprocess(run_dir, out, "--generations", 4, "--resume", *SMALL)
    assert outputs(out) == outputs(uninterrupted)


def test_resume_with_changed_problem_is_refused(tmp_path, run_dir):
    out = tmp_path / "changed"
    run_cli("evolve", run_dir, "--out", out, "--generations", 1, *SMALL)
    before = (out / "state" / "big.json").read_text()
    message = run_cli("evolve", run_dir, "--out", out, "--generations", 2, "--resume", "--objectives", "loss,params",
                      "--constraint", "flops<=1e9", *SMALL, expect=2)
    assert "problem differs in: constraints, objectives" in message
    assert (out / "state" / "big.json").read_text() == before
    assert "--resume" in run_cli("evolve", run_dir, "--out", out, *SMALL, expect=2)


def test_constraints_hold_on_the_front(tmp_path, run_dir, uninterrupted):
    flops = sorted(r["flops"] for r in json.loads((uninterrupted / "pareto.json").read_text())["front"])
    bound = flops[len(flops) // 2]
    out = tmp_path / "bounded"
    run_cli("evolve", run_dir, "--out", out, "--generations", 2, "--constraint", f"flops<={bound}", *SMALL)
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert front and all(r["flops"] <= bound for r in front)


def test_impossible_constraint_names_the_bound(tmp_path, run_dir):
    out = run_cli("evolve", run_dir, "--out", tmp_path / "x", "--constraint", "params<=10", *SMALL, expect=2)
    assert "params<=10" in out
    # 'small' (hidden <= 32) cannot reproduce the teacher (hidden 64); the largest arch of 'big' is the teacher
    out = run_cli("evolve", run_dir, "--out", tmp_path / "y", "--subspace", "small", "--generations", 1,
                  "--constraint", "loss<=1e-9", *SMALL, expect=2)
    assert "tightest bound loss<=1e-09" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--constraint", "flops=<2"], "expected NAME<=NUMBER"),
        (["--constraint", "speed<=2"], "unknown name 'speed'"),
        (["--constraint", "__import__('os')<=1"], "expected NAME<=NUMBER"),
        (["--objectives", "loss,beauty"], "unknown objective 'beauty'"),
    ],
)
def test_bad_search_arguments(tmp_path, run_dir, args, message):
    assert message in run_cli("evolve", run_dir, "--out", tmp_path / "s", *args, *SMALL, expect=2)
    assert not (tmp_path / "s" / "state").exists()


def test_missing_run_dir(tmp_path):
    assert "run directory not found" in run_cli("evolve", tmp_path / "nope", "--out", tmp_path / "s", expect=2)


@pytest.mark.parametrize("algorithm", ["random", "exhaustive"])
def test_baselines_cover_the_space_without_duplicates(tmp_path, run_dir, algorithm):
    out = tmp_path / algorithm
    run_cli("evolve", run_dir, "--out", out, "--subspace", "small", "--algorithm", algorithm,
            "--generations", 8, *SMALL)
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 40  # the 40 archs of per-layer 'small', then it stops


@pytest.mark.slow
def test_sigterm_stops_after_the_generation_then_resume_equals_uninterrupted(tmp_path, run_dir, uninterrupted):
    out = tmp_path / "stopped"
    proc = evolve_subprocess(run_dir, out, "--generations", 4, *SMALL, fault="search-generation:2:SIGTERM", expect=143)
    assert "stopped by SIGTERM" in proc.stderr and "--resume" in proc.stderr
    assert json.loads((out / "state" / "big.json").read_text())["generation"] == 2 and not (out / "pareto.json").exists()
    evolve_subprocess(run_dir, out, "--generations", 4, *SMALL, "--resume")
    assert outputs(out) == outputs(uninterrupted)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, run_dir, uninterrupted):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29657", "-m"]
    out = tmp_path / "two"
    evolve_subprocess(run_dir, out, "--generations", 4, *SMALL, launcher=launcher)
    assert outputs(out) == outputs(uninterrupted)


def test_per_layer_history_and_no_duplicate_archs(uninterrupted):
    rows = [json.loads(line) for line in (uninterrupted / "history.jsonl").read_text().splitlines()]
    for subspace in ("big", "small"):
        for generation in range(1, 5):
            keys = [r["key"] for r in rows if r["subspace"] == subspace and r["generation"] == generation]
            # duplicates are judged by the active arch: never twice in one generation (pymoo may
            # find fewer than 6 new offspring in a 40-arch space)
            assert len(keys) == len(set(keys)) and (len(keys) == 6 if generation == 1 else 1 <= len(keys) <= 6)
    per_layer = [r for r in rows if isinstance(r["arch"]["heads"], list) or isinstance(r["arch"]["mlp_ratio"], list)]
    assert per_layer, "a per-layer search should evaluate heterogeneous archs"
    for r in per_layer:
        for gene in ("heads", "mlp_ratio"):
            if isinstance(r["arch"][gene], list):
                assert len(r["arch"][gene]) == r["arch"]["layers"] and len(set(r["arch"][gene])) > 1
    front = json.loads((uninterrupted / "pareto.json").read_text())["front"]
    assert all(isinstance(f["ffn"], list) == isinstance(f["mlp_ratio"], list) for f in front)


def test_enumerates_when_the_budget_covers_the_space(tmp_path, tiny_search):
    """Uniform 'small' has 16 archs: population 6 x 3 generations = 18 >= 16, so all are evaluated."""
    out = tmp_path / "enumerated"
    message = run_cli("evolve", tiny_search / "run", "--out", out, "--subspace", "small", "--generations", 3, *SMALL)
    assert "evaluating all of them instead of evolving" in message and message.count("instead of evolving") == 1
    state = json.loads((out / "state" / "small.json").read_text())
    assert state["algorithm_name"] == "exhaustive"
    keys = [json.loads(line)["key"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 16


def test_strict_bound_at_equality_is_infeasible():
    from autodistil_evo.bounds import parse_bound

    strict, loose = parse_bound("flops<100", ("flops",)), parse_bound("flops<=100", ("flops",))
    assert strict.violation(100) > 0 and not strict.holds(100)
    assert loose.violation(100) == 0 and loose.holds(100)
    assert strict.violation(99) < 0 and parse_bound("flops>100", ("flops",)).violation(100) > 0


def test_bf16_proxy_is_close_to_fp32_and_part_of_the_identity(tmp_path, run_dir, uninterrupted):
    out = tmp_path / "bf16"
    run_cli("evolve", run_dir, "--out", out, "--generations", 2, "--precision", "bf16", *SMALL)
    fp32 = {(r["subspace"], r["key"]): r["loss"] for r in map(json.loads, (uninterrupted / "history.jsonl").read_text().splitlines())}
    bf16 = {(r["subspace"], r["key"]): r["loss"] for r in map(json.loads, (out / "history.jsonl").read_text().splitlines())}
    common = set(fp32) & set(bf16)
    assert len(common) >= 6
    scale = max(fp32.values())  # the loss of a subnet equal to the teacher is ~0: compare on the losses scale
    assert max(abs(bf16[k] - fp32[k]) for k in common) < 0.05 * scale, sorted((fp32[k], bf16[k]) for k in common)
    assert json.loads((out / "search.json").read_text())["precision"] == "bf16"
    message = run_cli("evolve", run_dir, "--out", out, "--generations", 3, "--resume", *SMALL, expect=2)
    assert "precision" in message
    assert "--precision fp16 needs a CUDA GPU" in run_cli("evolve", run_dir, "--out", tmp_path / "x", "--precision", "fp16", expect=2)
    assert not (tmp_path / "x").exists()


LINAS = ["--algorithm", "linas", "--population", 5, "--eval-samples", 8, "--inner-evaluations", 150]


@pytest.fixture(scope="module")
def linas_uninterrupted(tmp_path_factory, run_dir):
    out = tmp_path_factory.mktemp("linas") / "full"
    run_cli("evolve", run_dir, "--out", out, "--subspace", "big", "--generations", 3, *LINAS)
    return out


def test_linas_reports_its_predictors_and_measures_distinct_archs(linas_uninterrupted):
    rows = [json.loads(line) for line in (linas_uninterrupted / "history.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 15  # 3 rounds of 5 new archs out of 40
    assert not any("predicted" in r for r in rows if r["generation"] == 1)  # the first round is a random sample
    later = [r for r in rows if r["generation"] > 1]
    assert all(set(r["predicted"]) == {"loss"} for r in later)  # FLOPs are counted, not predicted
    summary = json.loads((linas_uninterrupted / "hypervolume.json").read_text())[0]
    rounds = summary["predictor"]
    assert [r["round"] for r in rounds] == [1, 2, 3] and rounds[0]["predictors"] is None
    for r in rounds[1:]:
        quality = r["predictors"]["loss"]
        assert quality["n"] == 5 and -1 <= quality["kendall_tau"] <= 1 and quality["mape"] >= 0
        predicted = [x["predicted"]["loss"] for x in later if x["generation"] == r["round"]]
        measured = [x["loss"] for x in later if x["generation"] == r["round"]]
        mape = sum(abs(p - m) / max(abs(m), 1e-12) for p, m in zip(predicted, measured)) / len(measured)
        assert quality["mape"] == pytest.approx(mape)


@pytest.mark.slow
def test_linas_killed_mid_round_resumes_to_the_same_history(tmp_path, run_dir, linas_uninterrupted):
    out = tmp_path / "killed"
    # 5 evaluations make round 1; the 8th is inside round 2 (after its predictors proposed it).
    evolve_subprocess(run_dir, out, "--subspace", "big", "--generations", 3, *LINAS, fault="search-eval:8", expect=-9)
    assert json.loads((out / "state" / "big.json").read_text())["generation"] == 1
    evolve_subprocess(run_dir, out, "--subspace", "big", "--generations", 3, "--resume", *LINAS)
    assert outputs(out) == outputs(linas_uninterrupted)


def test_linas_finds_the_exhaustive_fronts_knee(tmp_path, run_dir, linas_uninterrupted):
    exhaustive = tmp_path / "exhaustive"
    run_cli("evolve", run_dir, "--out", exhaustive, "--subspace", "big", "--algorithm", "exhaustive", "--generations", 8, *SMALL)
    assert len((exhaustive / "history.jsonl").read_text().splitlines()) == 40

    def knee(search_dir):
        picked = json.loads(run_cli("select", search_dir, "--pick", "knee", "--json"))
        return next(r["id"] for r in picked if r["picked"])

    linas_front = {r["id"] for r in json.loads((linas_uninterrupted / "pareto.json").read_text())["front"]}
    assert knee(exhaustive) in linas_front  # found in 15 of the 40 measurements


@pytest.mark.parametrize("args, message", [
    (["--population", 0], "--population must be >= 2"),
    (["--inner-evaluations", 20], "--inner-evaluations: 20 is below the inner NSGA-II's population of 50"),
])
def test_bad_linas_options(tmp_path, run_dir, args, message):
    out = run_cli("evolve", run_dir, "--out", tmp_path / "s", "--algorithm", "linas", "--eval-samples", 8, *args, expect=2)
    assert message in out and not (tmp_path / "s" / "state").exists()


def test_linas_respects_constraints(tmp_path, run_dir, linas_uninterrupted):
    flops = sorted(r["flops"] for r in json.loads((linas_uninterrupted / "pareto.json").read_text())["front"])
    bound = flops[len(flops) // 2]
    out = tmp_path / "bounded"
    run_cli("evolve", run_dir, "--out", out, "--subspace", "big", "--generations", 2, "--constraint", f"flops<={bound}", *LINAS)
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert front and all(r["flops"] <= bound for r in front)
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # the predicted round proposes feasible archs only (FLOPs are exact inside the inner search)
    assert all(r["flops"] <= bound for r in rows if r["generation"] == 2)
