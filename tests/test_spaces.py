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
    assert all(sub.candidate_count() >= 64 for sub in space.subspaces.values())


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


# ----- per-layer sub-spaces


def test_layerwise_stats_are_exact_and_analytic():
    rows = {r["subspace"]: r for r in json.loads(run_cli("space", "stats", "spaces/minilm-l6-layerwise.yaml", "--json"))}
    # tiny: 2-3 layers, 4 hidden, 4 heads and 4 ratios chosen per layer
    assert rows["tiny"]["candidates"] == 4 * (4**2 * 4**2 + 4**3 * 4**3) == 17408
    assert rows["small"]["candidates"] == 4 * (16**5 + 16**6) == 71303168
    uniform = {r["subspace"]: r for r in json.loads(run_cli("space", "stats", "spaces/minilm-l6.yaml", "--json"))}
    for name, row in rows.items():  # per layer or not, the cheapest and dearest archs are the same
        assert {k: v for k, v in row.items() if k != "candidates"} == {k: v for k, v in uniform[name].items() if k != "candidates"}
    big = json.loads(run_cli("space", "stats", "spaces/autodistil-bert-base-layerwise.yaml", "--json"))
    assert big[0]["candidates"] == 4 * sum(16**depth for depth in (9, 10, 11, 12))  # exact beyond 2^53
    deep = yaml.safe_load(open("spaces/autodistil-bert-base-layerwise.yaml"))
    deep["subspaces"]["base"]["layers"] = [24]  # 4 x 16^24 archs: more than len() can return
    from autodistil_evo.spaces.space import parse_space

    assert parse_space(deep).subspace("base").candidate_count() == 4 * 16**24
    assert "71303168" in run_cli("space", "stats", "spaces/minilm-l6-layerwise.yaml")


def test_candidate_count_matches_enumeration_and_brute_force(layerwise_space_file):
    import itertools

    from autodistil_evo.spaces import Arch

    space = load_space(layerwise_space_file)
    for sub in space.subspaces.values():
        archs = list(sub.candidates())
        assert len(archs) == len(set(archs)) == sub.candidate_count() == 40
        brute = {
            Arch(depth, list(h), hidden, list(r))
            for depth in sub.layers for hidden in sub.hidden
            for h in itertools.product(sub.heads, repeat=depth) for r in itertools.product(sub.mlp_ratio, repeat=depth)
        }
        assert brute == set(archs)


def test_arch_json_forms_and_ids():
    from autodistil_evo.spaces import Arch

    uniform = Arch.from_dict({"layers": 4, "heads": [8, 8, 8, 8], "hidden": 176, "mlp_ratio": [2.5, 2.5, 2.5, 2.5]})
    assert uniform == Arch(4, 8, 176, 2.5) and hash(uniform) == hash(Arch(4, 8, 176, 2.5))
    assert uniform.key() == "L4-H8-D176-R2.5" and uniform.to_dict() == {"layers": 4, "heads": 8, "hidden": 176, "mlp_ratio": 2.5}
    mixed = Arch.from_dict({"layers": 4, "heads": [8, 8, 10, 6], "hidden": 176, "mlp_ratio": [2.5, 3, 3, 2]})
    assert mixed.key() == "L4-D176-H8_8_10_6-R2.5_3_3_2"
    assert mixed.to_dict() == {"layers": 4, "heads": [8, 8, 10, 6], "hidden": 176, "mlp_ratio": [2.5, 3.0, 3.0, 2.0]}
    assert mixed.ffn == [440, 528, 528, 352] and Arch.from_dict(mixed.to_dict()) == mixed
    assert Arch(4, [8, 8, 10, 6], 176, 2.5).key() == "L4-D176-H8_8_10_6-R2.5"
    with pytest.raises(UserError, match=r"arch\.heads: 3 values for 4 layers"):
        Arch.from_dict({"layers": 4, "heads": [8, 8, 10], "hidden": 176, "mlp_ratio": 2.5})
    with pytest.raises(UserError, match=r"arch\.hidden: one value per student"):
        Arch.from_dict({"layers": 2, "heads": 8, "hidden": [176, 160], "mlp_ratio": 2.5})


def test_genome_round_trip_and_inactive_genes(layerwise_space_file):
    import numpy as np

    sub = load_space(layerwise_space_file).subspace("big")
    assert sub.genome_sizes() == [2, 2, 2, 2, 2, 2]  # layers, hidden, h1, h2, r1, r2
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = sub.sample(rng)
        assert sub.decode(sub.encode(arch)) == arch
    # depth 1 (index 0): the second layer's genes are inactive, so these genomes are one arch
    assert sub.decode([0, 1, 1, 0, 0, 1]) == sub.decode([0, 1, 1, 1, 0, 0])
    assert sub.encode(sub.decode([0, 1, 1, 1, 0, 1])) == [0, 1, 1, 0, 0, 0]


def test_uniform_subspace_keeps_its_genome_and_ids():
    sub = load_space("spaces/minilm-l6.yaml").subspace("small")
    assert sub.genome_sizes() == [2, 4, 4, 4]  # layers, heads, hidden, mlp_ratio as before
    first = next(iter(sub.candidates()))
    assert first.key() == "L5-H7-D128-R2.5" and sub.encode(first) == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["subspaces"]["big"].update(per_layer=["hidden"]), "subspaces.big.per_layer: unknown gene 'hidden'"),
        (lambda d: d["subspaces"]["big"].update(per_layer=["heads"], heads=[4]), "subspaces.big.per_layer: 'heads' has one choice"),
        (lambda d: d["subspaces"]["big"].update(per_layer=["heads", "heads"]), "subspaces.big.per_layer: a gene is listed twice"),
    ],
)
def test_per_layer_schema_errors_name_the_field(tmp_path, change, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(_with(change)))
    out = run_cli("space", "stats", path, expect=2)
    assert message in out and str(path) in out


def test_subspace_check_names_the_field(layerwise_space_file, tiny_space_file):
    from autodistil_evo.spaces import Arch

    layerwise = load_space(layerwise_space_file).subspace("big")
    with pytest.raises(UserError, match=r"--arch\.heads\[1\]: 5 is not among sub-space 'big' choices \[3, 4\]"):
        layerwise.check(Arch(2, [3, 5], 48, 1.5), "--arch")
    uniform = load_space(tiny_space_file).subspace("big")
    with pytest.raises(UserError, match=r"--arch\.heads: layers differ \(\[3, 4\]\) but sub-space 'big' has no per-layer heads"):
        uniform.check(Arch(2, [3, 4], 48, 1.5), "--arch")
    assert layerwise.contains(Arch(2, [3, 4], 48, [1.5, 2.0])) and not uniform.contains(Arch(2, [3, 4], 48, 1.5))
