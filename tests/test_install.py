"""The package as a user installs it: a wheel in a fresh environment, run from an empty folder."""

import subprocess
import sys
import sysconfig

import pytest
from conftest import REPO

from autodistil_evo.distill.recipe import load_recipe
from autodistil_evo.spaces import load_space


def test_shipped_names_and_recipe_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: relative paths must not depend on it
    recipe = load_recipe("quickstart")
    assert recipe.source == str(REPO / "recipes" / "quickstart.yaml")
    assert load_space(recipe.resolve(recipe.space)).name == "minilm-l6"
    assert recipe.deepspeed_config()["optimizer"]["type"] == "AdamW"
    assert load_space("minilm-l6-layerwise").name == "minilm-l6-layerwise"
    assert load_recipe("bench.yaml").steps == 300
    with pytest.raises(Exception, match="nope: recipe file not found"):
        load_recipe("nope")


@pytest.mark.slow
def test_wheel_in_a_fresh_environment_runs_from_an_empty_folder(tmp_path, corpus_file):
    wheels, env, empty = tmp_path / "wheels", tmp_path / "env", tmp_path / "empty"
    empty.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, REPO],
                   check=True, capture_output=True, cwd=tmp_path)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
    site = next((env / "lib").glob("python*/site-packages"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, *wheels.glob("*.whl")],
                   check=True, capture_output=True)
    # The dependencies from this environment, without its editable install of the checkout (a plain path
    # in a .pth file: the .pth files there, the editable finder among them, are not run).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    def run(*args):
        proc = subprocess.run([env / "bin" / "python", "-m", "autodistil_evo", *map(str, args)], cwd=empty,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    where = subprocess.run([env / "bin" / "python", "-c", "import autodistil_evo; print(autodistil_evo.__file__)"],
                           cwd=empty, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
    assert "tiny" in run("space", "stats", "minilm-l6")
    assert "training plan" in run("train", "--dry-run", "--out", "run")
    out = run("train", "--recipe", "quickstart", "--subspace", "tiny", "--steps", 2, "--corpus", corpus_file, "--out", "run")
    assert "tiny" in out and (empty / "run" / "tiny" / "superlm.safetensors").is_file()
