"""Students that keep any subset of the teacher's layers (`layer_choice: subset`)."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import make_teacher, tiny_recipe
from helpers import run_cli
from transformers import AutoModel

from autodistil_evo.errors import UserError
from autodistil_evo.spaces import Arch
from autodistil_evo.spaces.space import parse_space

SUBSET_SPACE = {
    "name": "tiny-subsets",
    "head_dim": "teacher",
    "seq_len": 32,
    "subspaces": {"keep": {"layers": [1, 2, 3], "heads": [2, 4], "hidden": [32, 64], "mlp_ratio": [1.0, 2.0],
                           "layer_choice": "subset", "superlm_layers": 4}},
}


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, corpus_file):
    """A 4-layer teacher and the SuperLM of a subset space, at step 0 and after 3 LayerDrop-style steps."""
    base = tmp_path_factory.mktemp("subsets")
    teacher = make_teacher(base / "teacher4", layers=4)
    space = base / "subsets.yaml"
    space.write_text(yaml.safe_dump(SUBSET_SPACE))
    recipe = tiny_recipe(base / "recipe.yaml", teacher, space, corpus_file)
    run_cli("train", "--recipe", recipe, "--out", base / "zero", "--steps", 0)
    run_cli("train", "--recipe", recipe, "--out", base / "trained", "--steps", 3)
    return base


def test_a_subset_space_holds_every_layer_subset_and_its_genome_round_trips():
    sub = parse_space(SUBSET_SPACE).subspace("keep")
    archs = list(sub.candidates())
    assert len(archs) == sub.candidate_count() == sum(math.comb(4, d) for d in (1, 2, 3)) * 8
    assert len({a.key() for a in archs}) == len(archs)
    assert all(sub.decode(sub.encode(a)) == a for a in archs)
    assert sub.largest().layer_ids == (0, 1, 2) and sub.smallest().layer_ids == (0,)  # strided over the 4
    assert sub.genome_sizes()[:4] == [2, 2, 2, 2]  # a keep-bit per layer, the depth is their count
    assert sub.decode([0, 0, 0, 0, 0, 0, 0]).layer_ids == (0,)  # no bit set: repaired to the shallowest depth
    assert sub.decode([1, 1, 1, 1, 0, 0, 0]).layer_ids == (0, 1, 2)  # four kept: the last one dropped
    rng = np.random.default_rng(0)
    drawn = {sub.sample(rng).layer_ids for _ in range(200)}
    assert len(drawn) == 14 and all(sub.contains(sub.sample(rng)) for _ in range(20))
    arch = Arch.from_dict({"layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0, "layer_ids": [1, 3]})
    assert arch.key() == "L2@1_3-H4-D64-R2" and Arch.from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize("arch, message", [
    ({"layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0, "layer_ids": [0, 4]},
     "arch.layer_ids: layer 4 is past the 4 layers of sub-space 'keep' (indices 0-3)"),
    ({"layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0, "layer_ids": [3, 1]},
     "arch.layer_ids: [3, 1] is not an ascending list of distinct layer indices"),
    ({"layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0, "layer_ids": [1]},
     "arch.layer_ids: 1 layers listed for a depth of 2"),
])
def test_a_bad_layer_subset_is_one_line(arch, message):
    sub = parse_space(SUBSET_SPACE).subspace("keep")
    with pytest.raises(UserError) as error:
        sub.check(Arch.from_dict(arch))
    assert str(error.value) == message


def test_layer_ids_in_a_strided_space_and_a_bad_layer_choice_are_refused():
    strided = parse_space({**SUBSET_SPACE, "subspaces": {"keep": {**SUBSET_SPACE["subspaces"]["keep"],
                                                                  "layer_choice": "stride", "superlm_layers": None}}}).subspace("keep")
    with pytest.raises(UserError, match="runs evenly strided layers"):
        strided.check(Arch(2, 4, 64, 2.0, (0, 3)))
    keep = SUBSET_SPACE["subspaces"]["keep"]
    with pytest.raises(UserError, match="layer_choice: 'any' is not one of stride, subset"):
        parse_space({**SUBSET_SPACE, "subspaces": {"keep": {**keep, "layer_choice": "any"}}})
    with pytest.raises(UserError, match="keep.superlm_layers: 2 is fewer than the deepest student's 3 layers"):
        parse_space({**SUBSET_SPACE, "subspaces": {"keep": {**keep, "superlm_layers": 2}}})
    with pytest.raises(UserError, match="superlm_layers: only with layer_choice: subset"):
        parse_space({**SUBSET_SPACE, "subspaces": {"keep": {**keep, "layer_choice": "stride"}}})


def test_a_layer_subset_student_at_step_0_is_the_teacher_with_those_layers_kept(subset_run, tmp_path):
    """Full width, layers 1 and 3: the export equals the teacher with layers 0 and 2 dropped (<= 1e-5), reloads
    equal to its subnet (the export's own check), and its card and provenance name the teacher layers kept."""
    arch = {"subspace": "keep", "layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0, "layer_ids": [1, 3]}
    out = tmp_path / "student"
    run_cli("export", subset_run / "zero", "--arch", json.dumps(arch), "--out", out)
    provenance = json.loads((out / "autodistil_provenance.json").read_text())
    assert provenance["teacher_layers"] == [1, 3] and provenance["max_abs_diff"] <= 1e-5
    assert "| teacher layers kept | 1, 3 |" in (out / "README.md").read_text()
    teacher = AutoModel.from_pretrained(subset_run / "teacher4").eval()
    teacher.encoder.layer = torch.nn.ModuleList([teacher.encoder.layer[1], teacher.encoder.layer[3]])
    student = AutoModel.from_pretrained(out).eval()
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = teacher(input_ids=ids).last_hidden_state, student(input_ids=ids).last_hidden_state
    assert (expected - got).abs().max().item() <= 1e-5


def test_a_trained_subset_superlm_trains_its_subsets_and_exports_them(subset_run, tmp_path):
    """LayerDrop-style sandwich: the random members run sampled subsets; a subset student exports equal to its
    subnet, and a layer index past the SuperLM's depth is one line, exit 2, nothing written."""
    rows = [json.loads(line) for line in (subset_run / "trained" / "keep" / "metrics.jsonl").read_text().splitlines()]
    assert any("@" in key for row in rows for key in row["archs"][2:])
    arch = {"subspace": "keep", "layers": 2, "heads": 2, "hidden": 32, "mlp_ratio": 1.0, "layer_ids": [0, 2]}
    out = tmp_path / "student"
    run_cli("export", subset_run / "trained", "--arch", json.dumps(arch), "--out", out)
    assert json.loads((out / "autodistil_provenance.json").read_text())["max_abs_diff"] <= 1e-5
    bad = {**arch, "layer_ids": [0, 4]}
    message = run_cli("export", subset_run / "trained", "--arch", json.dumps(bad), "--out", tmp_path / "bad", expect=2)
    assert "layer_ids: layer 4 is past the 4 layers" in message and len(message.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_train_student_keeps_the_chosen_teacher_layers(subset_run, tmp_path):
    """`train-student --init teacher` of a subset arch starts from the teacher's layers that arch names."""
    arch = {"subspace": "keep", "layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0, "layer_ids": [1, 3]}
    recipe = subset_run / "recipe.yaml"
    run_cli("train-student", subset_run / "zero", "--arch", json.dumps(arch), "--recipe", recipe, "--init", "teacher",
            "--steps", 0, "--out", tmp_path / "alone")
    provenance = json.loads((tmp_path / "alone" / "model" / "autodistil_provenance.json").read_text())
    assert provenance["teacher_layers"] == [1, 3]


def test_the_search_chooses_layers(subset_run, tmp_path):
    """LINAS (the default) searches the keep-bits with the rest of the genome; its picks name their layers."""
    run_cli("evolve", subset_run / "trained", "--out", tmp_path / "search", "--population", 6, "--generations", 2,
            "--eval-samples", 8)
    front = json.loads((tmp_path / "search" / "pareto.json").read_text())
    rows = front["front"]
    assert rows and all(len(row["layer_ids"]) == row["layers"] and "@" in row["id"] for row in rows)
    assert "layer_ids" in (tmp_path / "search" / "pareto.csv").read_text().splitlines()[0]
    pick = rows[0]["id"]
    run_cli("export", tmp_path / "search", "--id", pick, "--out", tmp_path / "pick")
    exported = json.loads((tmp_path / "pick" / "autodistil_provenance.json").read_text())
    assert exported["arch"]["layer_ids"] == rows[0]["layer_ids"] == exported["teacher_layers"]
