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
