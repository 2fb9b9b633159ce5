"""select / export / finetune / bench on a tiny run and search."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import assert_no_absolute_paths, run_cli
from safetensors.torch import load_file, save_file

from autodistil_evo.distill.artifact import load_superlm
from autodistil_evo.export.select import knee_index
from autodistil_evo.spaces import Arch

BLOCK_PACKAGE = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "autodistil_evo":
            raise ImportError("autodistil_evo is hidden in this test")
sys.meta_path.insert(0, _Block())
"""


def reload_without_package(tmp_path, model_dir, ids, mask, model_class, classifier=False):
    """last_hidden_state of `model_dir` loaded with AutoModel in a process that cannot import autodistil_evo."""
    save_file({"ids": ids, "mask": mask}, tmp_path / "inputs.safetensors")
    script = BLOCK_PACKAGE + f"""
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForSequenceClassification
x = load_file({str(tmp_path / "inputs.safetensors")!r})
model = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
assert type(model).__name__ == {model_class!r}, type(model).__name__
with torch.no_grad():
    hidden = model(input_ids=x["ids"], attention_mask=x["mask"]).last_hidden_state
if {classifier!r}:
    classifier = AutoModelForSequenceClassification.from_pretrained({str(model_dir)!r}, num_labels=2, trust_remote_code=True)
    assert classifier(input_ids=x["ids"], attention_mask=x["mask"]).logits.shape == (x["ids"].shape[0], 2)
save_file({{"hidden": hidden.contiguous()}}, {str(tmp_path / "hidden.safetensors")!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(tmp_path / "hidden.safetensors")["hidden"]


@pytest.fixture(scope="module")
def search(tiny_search):
    return tiny_search


def test_knee_is_the_bulge():
    points = np.array([[1.0, 0.0], [0.9, 0.05], [0.2, 0.2], [0.05, 0.9], [0.0, 1.0]])
    assert knee_index(points) == 2
    assert knee_index(np.array([[1.0, 0.0], [0.0, 1.0]])) in (0, 1)


def test_select_json_and_pick(search):
    rows = json.loads(run_cli("select", search / "search", "--json", "--pick", "min-loss"))
    assert rows and set(rows[0]) == {"id", "subspace", "layers", "heads", "hidden", "mlp_ratio", "params", "flops", "loss", "picked"}
    picked = [r for r in rows if r["picked"]]
    assert len(picked) == 1 and picked[0]["loss"] == min(r["loss"] for r in rows)
    bound = sorted(r["flops"] for r in rows)[len(rows) // 2]
    filtered = json.loads(run_cli("select", search / "search", "--json", "--where", f"flops<={bound}"))
    assert filtered and all(r["flops"] <= bound for r in filtered) and sum(r["picked"] for r in filtered) == 1
    table = run_cli("select", search / "search")
    assert "FLOPs vs teacher" in table and "*" in table


@pytest.mark.parametrize(
    "where, message",
    [
        ("flops<=", "expected NAME<=NUMBER"),
        ("size<=3", "unknown name 'size'"),
        ("flops<=1e3", "the closest is"),
    ],
)
def test_select_errors(search, where, message):
    out = run_cli("select", search / "search", "--where", where, expect=2)
    assert message in out
    if message == "the closest is":
        assert "breaks flops<=1000" in out


def _reference_outputs(run_dir, arch, ids, mask):
    trained = load_superlm(run_dir / arch["subspace"])
    trained.superlm.set_active(Arch.from_dict(arch))
    with torch.no_grad():
        return trained.superlm(ids, mask)[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "space, arch, model_class",
    [
        ("uniform", {"subspace": "small", "layers": 2, "heads": 3, "hidden": 32, "mlp_ratio": 2.0}, "StudentModel"),
        ("uniform", {"subspace": "big", "layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 1.5}, "BertModel"),
        ("layerwise", {"subspace": "big", "layers": 2, "heads": [4, 3], "hidden": 48, "mlp_ratio": [1.5, 2.0]}, "StudentModel"),
        # uniform heads x head_dim == hidden, but FFN per layer: BERT cannot express it
        ("layerwise", {"subspace": "big", "layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": [2.0, 1.5]}, "StudentModel"),
        # a uniform arch written with lists is the uniform arch: a plain BertModel
        ("layerwise", {"subspace": "big", "layers": 2, "heads": [4, 4], "hidden": 64, "mlp_ratio": [1.5, 1.5]}, "BertModel"),
    ],
)
def test_export_loads_without_the_package(tmp_path, request, space, arch, model_class):
    run_dir = request.getfixturevalue("tiny_search") / "run" if space == "uniform" else request.getfixturevalue("layerwise_run")
    out = tmp_path / "student"
    message = run_cli("export", run_dir, "--arch", json.dumps(arch), "--out", out)
    assert "max abs difference" in message and model_class in message
    config = json.loads((out / "config.json").read_text())
    assert ("auto_map" in config) == (model_class == "StudentModel")
    card = (out / "README.md").read_text()
    assert "sha256" in card and arch["subspace"] in card and "proxy loss" in card
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    hidden = reload_without_package(tmp_path, out, ids, mask, model_class, classifier=True)
    expected = _reference_outputs(run_dir, arch, ids, mask)
    assert (hidden - expected)[mask.bool()].abs().max().item() <= 1e-5


def test_export_by_id_and_overwrite_refusal(tmp_path, search):
    front = json.loads((search / "search" / "pareto.json").read_text())["front"]
    out = tmp_path / "by-id"
    run_cli("export", search / "search", "--id", front[0]["id"], "--out", out)
    provenance = json.loads((out / "autodistil_provenance.json").read_text())
    assert provenance["id"] == front[0]["id"] and provenance["proxy_loss"] == front[0]["loss"]
    assert_no_absolute_paths(out)
    assert provenance["space"] == "tiny-test" and len(provenance["space_sha256"]) == 64
    assert (out / provenance["superlm"]).resolve() == (search / "run" / front[0]["subspace"]).resolve()
    before = (out / "model.safetensors").read_bytes()
    assert "--force" in run_cli("export", search / "search", "--id", front[-1]["id"], "--out", out, expect=2)
    assert (out / "model.safetensors").read_bytes() == before
    run_cli("export", search / "search", "--id", front[-1]["id"], "--out", out, "--force")
    assert json.loads((out / "autodistil_provenance.json").read_text())["id"] == front[-1]["id"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "{broken"], "--arch: not valid JSON"),
        (["--arch", '{"subspace": "small", "layers": 9, "heads": 2, "hidden": 32, "mlp_ratio": 1.0}'],
         "--arch.layers: 9 is not among sub-space 'small' choices"),
        (["--arch", '{"subspace": "small", "layers": 2, "heads": [2, 3, 3], "hidden": 32, "mlp_ratio": 1.0}'],
         "--arch.heads: 3 values for 2 layers"),
        (["--arch", '{"subspace": "small", "layers": 2, "heads": [2, 3], "hidden": 32, "mlp_ratio": 1.0}'],
         "--arch.heads: layers differ ([2, 3]) but sub-space 'small' has no per-layer heads"),
        (["--arch", '{"subspace": "huge", "layers": 1, "heads": 2, "hidden": 32, "mlp_ratio": 1.0}'], "no trained SuperLM here"),
    ],
)
def test_export_errors(tmp_path, search, args, message):
    assert message in run_cli("export", search / "run", *args, "--out", tmp_path / "x", expect=2)
    assert not (tmp_path / "x").exists()


def test_per_layer_search_select_and_export_by_id(tmp_path, layerwise_run):
    search_dir = tmp_path / "search"
    run_cli("evolve", layerwise_run, "--out", search_dir, "--population", 6, "--generations", 2, "--eval-samples", 8)
    rows = json.loads(run_cli("select", search_dir, "--json", "--pick", "all"))
    assert set(rows[0]) == {"id", "subspace", "layers", "heads", "hidden", "mlp_ratio", "params", "flops", "loss", "picked"}
    history = [json.loads(line) for line in (search_dir / "history.jsonl").read_text().splitlines()]
    heterogeneous = [r for r in history if isinstance(r["arch"]["heads"], list)]
    assert heterogeneous
    target = f"{heterogeneous[0]['subspace']}-{heterogeneous[0]['key']}"  # any evaluated arch, not only the front
    out = tmp_path / "student"
    run_cli("export", search_dir, "--id", target, "--out", out)
    config = json.loads((out / "config.json").read_text())
    assert config["num_attention_heads"] == heterogeneous[0]["arch"]["heads"]
    assert config["intermediate_size"] == Arch.from_dict(heterogeneous[0]["arch"]).ffn  # a list where FFN is per layer
    provenance = json.loads((out / "autodistil_provenance.json").read_text())
    assert provenance["arch"] == heterogeneous[0]["arch"] and provenance["max_abs_diff"] <= 1e-5
    # per-layer rows filter by their largest layer
    bound = max(max(r["heads"]) if isinstance(r["heads"], list) else r["heads"] for r in rows)
    assert run_cli("select", search_dir, "--json", "--where", f"heads<={bound}")
    table = run_cli("select", search_dir, "--pick", "all")
    listed = [r for r in rows if isinstance(r["heads"], list)]
    assert not listed or "_".join(map(str, listed[0]["heads"])) in table


def test_export_unknown_id(tmp_path, search):
    assert "no student with id" in run_cli("export", search / "search", "--id", "nope", "--out", tmp_path / "x", expect=2)


def test_finetune_and_bench_on_a_student(tmp_path, search):
    out = tmp_path / "student"
    run_cli("export", search / "run", "--arch", json.dumps({"subspace": "big", "layers": 2, "heads": 3, "hidden": 64, "mlp_ratio": 2.0}), "--out", out)
    words = {0: ["bad", "awful", "dull", "boring"], 1: ["good", "great", "fun", "lovely"]}
    rng = np.random.default_rng(0)
    for name, n in (("train", 120), ("eval", 40)):
        lines = ["text,label"]
        for _ in range(n):
            label = int(rng.integers(2))
            lines.append(f"the film was {words[label][rng.integers(4)]} on day {rng.integers(30)},{'pos' if label else 'neg'}")
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    result = json.loads(run_cli("finetune", out, "--train", tmp_path / "train.csv", "--eval", tmp_path / "eval.csv",
                                "--epochs", 8, "--batch-size", 8, "--lr", 1e-3, "--json"))
    # dev is carved from --train (by text hash), --eval is the test split
    assert result["train_examples"] + result["dev_examples"] == 120 and result["test_examples"] == 40
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["test_accuracy"] > 0.6  # a trivially separable task is learnt
    rows = json.loads(run_cli("bench", out, "--seq-len", 16, "--repeats", 3, "--json"))
    assert rows[0]["latency_ms"] > 0 and rows[0]["seq_len"] == 16 and rows[0]["threads"] >= 1
    rows = json.loads(run_cli("bench", out, "--seq-len", 16, "--repeats", 3, "--precision", "bf16", "--json"))
    assert rows[0]["precision"] == "bf16" and rows[0]["latency_ms"] > 0
    assert "only with --runtime torch" in run_cli("bench", out, "--precision", "bf16", "--runtime", "onnxruntime", expect=2)
    rows = json.loads(run_cli("bench", out, "--seq-len", 16, "--repeats", 2, "--device", "cpu", "--json"))
    assert rows[0]["device"] == "cpu" and rows[0]["latency_ms"] > 0
    if not torch.cuda.is_available():  # asking for a GPU where there is none is one line, exit 2
        message = run_cli("bench", out, "--device", "cuda", expect=2)
        assert "--device cuda: no CUDA device on this machine" in message and "Traceback" not in message
        message = run_cli("evolve", search / "run", "--out", tmp_path / "s", "--objectives", "loss,latency",
                          "--latency-device", "cuda", expect=2)
        assert "--latency-device cuda: no CUDA device" in message and not (tmp_path / "s").exists()
    assert "'gpu' is not one of" in run_cli("bench", out, "--device", "gpu", expect=2)


def test_finetune_bad_csv(tmp_path, search):
    (tmp_path / "t.csv").write_text("sentence,y\nhello,1\n")
    out = run_cli("finetune", search / "run", "--train", tmp_path / "t.csv", "--eval", tmp_path / "t.csv", expect=2)
    assert "missing column(s) text, label" in out


def test_only_our_own_model_code_runs(tmp_path, search):
    """A folder whose model file is not our StudentModel file never runs unless the user trusts it."""
    import shutil

    student = tmp_path / "student"
    run_cli("export", search / "run", "--arch", json.dumps({"subspace": "small", "layers": 1, "heads": 2, "hidden": 16,
            "mlp_ratio": 1.0}), "--out", student)
    assert json.loads(run_cli("bench", student, "--repeats", 1, "--seq-len", 16, "--json"))[0]["latency_ms"] > 0  # ours: allowed
    hostile = tmp_path / "hostile"
    shutil.copytree(student, hostile)
    marker = tmp_path / "marker"
    code = (hostile / "modeling_student.py").read_text()
    (hostile / "modeling_student.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + code)
    for command in (["bench", hostile, "--repeats", 1, "--seq-len", 16], ["finetune", hostile, "--max-train", 8]):
        out = run_cli(*command, expect=2)
        assert "refused to run the folder's own code (modeling_student.py)" in out and "--trust-remote-code" in out
        assert not marker.exists()
    run_cli("bench", hostile, "--repeats", 1, "--seq-len", 16, "--trust-remote-code")
    assert marker.read_text() == "ran"  # the gate, not something else, kept it from running


def test_students_exported_by_an_earlier_version_still_run(tmp_path, search):
    """A folder carrying an earlier release's model file (from this repository's history) is our own code too."""
    import shutil
    import subprocess

    from conftest import REPO

    from autodistil_evo.export.trust import EARLIER_STUDENT_FILES

    path = "autodistil_evo/supernet/modeling_student.py"
    log = subprocess.run(["git", "log", "--format=%H", "--", path], cwd=REPO, capture_output=True, text=True)
    versions = [subprocess.run(["git", "show", f"{c}:{path}"], cwd=REPO, capture_output=True, text=True).stdout
                for c in log.stdout.split()[:3]] if log.returncode == 0 else []
    earlier = [t for t in versions if hashlib.sha256(t.encode()).hexdigest() in EARLIER_STUDENT_FILES]
    if not earlier:
        pytest.skip("no git history here")
    student = tmp_path / "student"
    run_cli("export", search / "run", "--arch", json.dumps({"subspace": "small", "layers": 1, "heads": 2, "hidden": 16,
            "mlp_ratio": 1.0}), "--out", student)
    old = tmp_path / "old"
    shutil.copytree(student, old)
    (old / "modeling_student.py").write_text(earlier[0])
    assert json.loads(run_cli("bench", old, "--repeats", 1, "--seq-len", 16, "--json"))[0]["latency_ms"] > 0
