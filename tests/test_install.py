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
    assert load_space(recipe.space_file()).name == "minilm-l6"
    assert recipe.deepspeed_config()["optimizer"]["type"] == "AdamW"
    assert load_space("minilm-l6-layerwise").name == "minilm-l6-layerwise"
    assert load_recipe("bench.yaml").steps == 300
    with pytest.raises(Exception, match="nope: recipe file not found"):
        load_recipe("nope")


def copied_recipe(folder, space="my-space.yaml"):
    """recipes/quickstart.yaml copied alone into `folder`, its `space:` changed (a space file is put beside it)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    (folder / "my-space.yaml").write_text((REPO / "spaces" / "minilm-l6.yaml").read_text())
    (folder / "quickstart.yaml").write_text(yaml.safe_dump({**recipe, "space": space}))
    return folder / "quickstart.yaml"


def test_a_copied_recipe_runs_from_any_folder(tmp_path, monkeypatch):
    from helpers import run_cli

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert "training plan" in run_cli("train", "--recipe", copied_recipe(tmp_path / "mine"), "--dry-run", "--out", "run")
    assert "training plan" in run_cli("train", "--recipe", copied_recipe(tmp_path / "named", "minilm-l6-k1"), "--dry-run",
                                      "--out", "run")
    out = run_cli("train", "--recipe", copied_recipe(tmp_path / "bad", "nope.yaml"), "--dry-run", "--out", "run", expect=2)
    assert (f"space: search-space file nope.yaml not found (looked in {tmp_path / 'bad' / 'nope.yaml'}, nope.yaml and "
            "the shipped spaces)") in " ".join(out.split())
    assert not (elsewhere / "run").exists()


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
    assert "training plan" in run("train", "--recipe", copied_recipe(empty / "mine"), "--dry-run", "--out", "run")
    out = run("train", "--recipe", "quickstart", "--subspace", "tiny", "--steps", 2, "--corpus", corpus_file, "--out", "run")
    assert "tiny" in out and (empty / "run" / "tiny" / "superlm.safetensors").is_file()
