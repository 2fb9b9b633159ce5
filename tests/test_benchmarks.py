"""The benchmark helpers whose failure would cost hours of `make bench` (benchmarks/ is scripts, not
a package: imported from its folder, as `run_all.py` runs them)."""

import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/common.py, report.py and run_all.py, imported the real way (not the smoke budgets)."""
    import importlib
    import os

    assert os.environ.get("AUTODISTIL_BENCH_SMOKE") != "1"
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield {name: importlib.import_module(name) for name in ("common", "report", "run_all")}
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_kendall_over_tied_accuracies_is_undefined_not_a_crash(bench):
    # Every student at the majority class: tau and its interval are undefined. This crashed the
    # proxy benchmark (an empty bootstrap) before `make bench-smoke` found it.
    tau, ci = bench["common"].kendall_with_ci([0.9, 0.8, 0.7, 0.6], [0.567] * 4)
    assert math.isnan(tau) and all(math.isnan(x) for x in ci)
    tau, ci = bench["common"].kendall_with_ci([1, 2, 3, 4, 5], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert tau == pytest.approx(1.0) and ci == pytest.approx([1.0, 1.0])


def test_results_are_strict_json(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench["report"], "RESULTS", tmp_path)
    bench["report"].write_results("x", {"tau": float("nan"), "ci95": [float("nan"), float("inf")], "n": 3})

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    data = json.loads((tmp_path / "x.json").read_text(), parse_constant=refuse)
    assert (data["tau"], data["ci95"], data["n"]) == (None, [None, None], 3)


def test_step_counts_come_from_the_recipes(bench):
    assert bench["common"].BENCH_RECIPE == "recipes/bench.yaml"
    assert bench["common"].recipe_steps(bench["common"].BENCH_RECIPE) == 300
    assert bench["common"].recipe_steps(bench["common"].QUICKSTART_RECIPE) == 40


def test_smoke_arguments_name_stages_that_exist(bench):
    stages = {stage[0] for stage in bench["run_all"].STAGES + bench["run_all"].STUDIES}
    assert set(bench["run_all"].SMOKE_ARGS) <= stages
    assert all((BENCHMARKS / script).is_file() for script in stages)


def test_paired_difference_is_the_mean_of_per_seed_differences(bench):
    a = {"accuracy_seeds": [0.80, 0.82, 0.78]}
    b = {"accuracy_seeds": [0.78, 0.79, 0.77]}
    d = bench["common"].paired_difference(a, b)
    assert d["per_seed"] == pytest.approx([2.0, 3.0, 1.0])
    assert d["points"] == pytest.approx(2.0) and d["sem"] == pytest.approx(1.0 / 3**0.5)
    assert bench["common"].paired_difference(a, None) is None


def test_gpu_scale_script_runs_at_tiny_sizes_on_the_cpu(bench, tmp_path, monkeypatch):
    """benchmarks/gpu_scale.py (what gpu_scale.sh runs on a GPU) at toy sizes: every figure of its JSON is there."""
    import importlib

    monkeypatch.setattr(bench["report"], "RESULTS", tmp_path)
    monkeypatch.setattr(bench["report"], "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(sys, "argv", ["gpu_scale.py", "--tiny", "--micro-batches", "2", "--precisions", "fp32,bf16",
                                      "--steps", "1", "--section", "gpu_scale"])
    importlib.import_module("gpu_scale").main()
    data = json.loads((tmp_path / "gpu_scale.json").read_text())
    assert data["device"] == "cpu" and data["peak_matmul_tflops"] > 0
    assert [(r["precision"], r["micro_batch"]) for r in data["rows"]] == [("fp32", 2), ("bf16", 2)]
    for row in data["rows"]:
        assert row["superlm_subnet_tokens_per_s"] == pytest.approx(4 * row["superlm_tokens_per_s"])
        assert row["reference_tokens_per_s"] > 0 and 0 < row["mfu"] and "peak_memory_gb" in row
    assert "## GPU scale" in (tmp_path / "BENCHMARKS.md").read_text()


def test_write_recipe_overrides_the_space_and_keeps_paths_absolute(bench, tmp_path):
    # A standalone distillation's recipe names its own one-arch space: that override crashed
    # (`space` given twice) every proxy-trustworthiness stage until `make bench-smoke` found it.
    import yaml

    common = bench["common"]
    out = common.write_recipe("recipes/bench.yaml", tmp_path / "r.yaml", space=str(tmp_path / "s.yaml"), steps=7)
    recipe = yaml.safe_load(Path(out).read_text())
    assert (recipe["space"], recipe["steps"]) == (str(tmp_path / "s.yaml"), 7)
    assert Path(recipe["deepspeed"]).is_absolute() and Path(recipe["deepspeed"]).is_file()
    default = yaml.safe_load(Path(common.write_recipe("recipes/bench.yaml", tmp_path / "d.yaml")).read_text())
    assert Path(default["space"]).is_file() and default["steps"] == 300


def test_hand_budgets_are_the_hand_shapes_flops(bench):
    # equal compute compares at these budgets and K=3 vs K=1 picks at them: both must see the same numbers.
    budgets = bench["common"].hand_budgets()
    assert [b[:3] for b in budgets] == bench["common"].HAND
    assert budgets[0][3] > budgets[1][3] > budgets[2][3] > 0


def test_proxy_students_include_the_shared_picks_and_spread_the_rest(bench, tmp_path):
    # proxy trustworthiness fine-tunes equal compute's searched students among its own: the picks must be
    # there, every other front student spread over the FLOPs range, none twice.
    import importlib

    proxy = importlib.import_module("proxy_correlation")
    genes = {"layers": 2, "heads": 2, "hidden": 64, "mlp_ratio": 2.0}
    front = [{"id": f"f{i}", "subspace": "s", "flops": 10 * i, "loss": 1.0 - i / 10, **genes} for i in range(10)]
    history = [{"subspace": "s", "key": f"k{i}", "arch": genes, "loss": 2.0, "flops": 10 * i + 5} for i in range(4)]
    (tmp_path / "pareto.json").write_text(json.dumps({"front": front}))
    (tmp_path / "history.jsonl").write_text("\n".join(map(json.dumps, history)))
    chosen = proxy.pick_archs(tmp_path, 5, 2, include=["f3", "f8"])
    on = [c["id"] for c in chosen if c["on_front"]]
    assert len(on) == len(set(on)) == 5 and {"f3", "f8"} <= set(on)
    assert on[0] == "f0" and on[-1] == "f9"  # the rest still reach both ends of the front
    assert [c["id"] for c in chosen if not c["on_front"]] == ["s-k0", "s-k3"]
    assert [c["id"] for c in proxy.pick_archs(tmp_path, 3, 0)] == ["f0", "f4", "f9"]


def test_a_paused_make_bench_leaves_the_pause_out_of_its_time(bench):
    """`run_all.py --pause` stops the bench with SIGSTOP: its Stopwatch must not count the stop."""
    import signal
    import subprocess
    import time

    script = ("import sys, time; sys.path.insert(0, sys.argv[1]); from run_all import Stopwatch\n"
              "clock = Stopwatch(tick=0.05, gap=0.5); print('ready', flush=True); sys.stdin.readline(); time.sleep(1)\n"
              "print(clock.seconds())")
    child = subprocess.Popen([sys.executable, "-c", script, str(BENCHMARKS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGSTOP)
    time.sleep(2.0)
    child.send_signal(signal.SIGCONT)
    child.stdin.write("go\n")
    child.stdin.flush()
    seconds = float(child.stdout.readline())
    assert child.wait() == 0
    assert 0.9 < seconds < 1.8  # the 1 s it ran after the pause, not the 2 s it stood stopped
