import json

import pytest
import yaml
from conftest import TINY_SPACE
from helpers import run_cli

from autodistil_evo.errors import UserError
from autodistil_evo.spaces import load_space
from autodistil_evo.teacher import load_teacher


def test_bert_base_space_stats_json():
    rows = json.loads(run_cli("space", "stats", "spaces/autodistil-bert-base.yaml", "--json"))
    assert [r["subspace"] for r in rows] == ["base", "small", "tiny"]
    assert all(r["candidates"] == 256 for r in rows)
    assert set(rows[0]) == {"subspace", "candidates", "params_min", "params_max", "flops_min", "flops_max"}
    # The three sub-spaces are ordered by size and do not overlap in parameters.
    assert rows[2]["params_max"] < rows[1]["params_min"] and rows[1]["params_max"] < rows[0]["params_min"]


def test_k1_space_spans_k3():
    k1 = load_space("spaces/autodistil-bert-base-k1.yaml")
    k3 = load_space("spaces/autodistil-bert-base.yaml")
    (union,) = k1.subspaces.values()
    assert all(union.contains(a) for sub in k3.subspaces.values() for a in sub.candidates())


def test_minilm_space_fits_embedded_teacher():
    space = load_space("spaces/minilm-l6.yaml")
    space.validate_against(load_teacher(None).shape)
    assert all(len(sub) >= 64 for sub in space.subspaces.values())


def test_stats_table_and_seq_len(tiny_space_file, tiny_teacher):
    out = run_cli("space", "stats", tiny_space_file, "--teacher", tiny_teacher, "--seq-len", 16)
    assert "big" in out and "small" in out and "seq len 16" in out
    # head_dim 'teacher' cannot be resolved without a teacher
    assert "pass --teacher" in run_cli("space", "stats", tiny_space_file, expect=2)


def _with(change):
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    change(data)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(colour="red"), "unknown key(s) colour"),
        (lambda d: d["subspaces"]["big"].update(depth=[1]), "subspaces.big: unknown key(s) depth"),
        (lambda d: d["subspaces"]["big"].update(layers=[]), "subspaces.big.layers: empty choice list"),
        (lambda d: d["subspaces"]["big"].update(layers=[1.5]), "subspaces.big.layers: 1.5 is not a positive integer"),
        (lambda d: d["subspaces"]["big"].update(hidden=["wide"]), "subspaces.big.hidden: 'wide' is not a positive integer"),
        (lambda d: d.pop("head_dim"), "missing key 'head_dim'"),
        (lambda d: d.update(subspaces={}), "subspaces must be a non-empty mapping"),
    ],
)
def test_space_schema_errors_name_the_field(tmp_path, change, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(_with(change)))
    out = run_cli("space", "stats", path, expect=2)
    assert message in out and str(path) in out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["subspaces"]["big"].update(layers=[3]), "subspaces.big.layers: 3 > teacher's 2 layers"),
        (lambda d: d["subspaces"]["big"].update(heads=[5]), "subspaces.big.heads: 5 heads x head_dim 16 = 80"),
        (lambda d: d["subspaces"]["big"].update(hidden=[96]), "subspaces.big.hidden: 96 > teacher's hidden 64"),
        (lambda d: d["subspaces"]["big"].update(mlp_ratio=[2.5]), "subspaces.big.mlp_ratio: FFN size 160"),
    ],
)
def test_space_larger_than_teacher_is_refused(tmp_path, tiny_teacher, change, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(_with(change)))
    out = run_cli("space", "stats", path, "--teacher", tiny_teacher, expect=2)
    assert message in out


def test_malformed_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    assert "malformed YAML" in run_cli("space", "stats", path, expect=2)
    assert "search-space file not found" in run_cli("space", "stats", tmp_path / "nope.yaml", expect=2)
    with pytest.raises(UserError, match="must be a YAML mapping"):
        path.write_text("- 1\n- 2\n")
        load_space(path)
