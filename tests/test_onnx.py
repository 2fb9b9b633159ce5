"""ONNX export checked by onnxruntime, int8 quantisation, onnxruntime latency, finetune --save."""

import json

import pytest
from helpers import run_cli

STUDENTS = {
    "bert": {"subspace": "big", "layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 1.5},
    "student": {"subspace": "small", "layers": 2, "heads": 3, "hidden": 32, "mlp_ratio": 2.0},
}

pytestmark = pytest.mark.slow  # ONNX export


@pytest.fixture(scope="module")
def students(tmp_path_factory, tiny_search, layerwise_run):
    base = tmp_path_factory.mktemp("onnx-students")
    out = {}
    for name, arch in STUDENTS.items():
        out[name] = base / name
        run_cli("export", tiny_search / "run", "--arch", json.dumps(arch), "--out", out[name])
    out["layerwise"] = base / "layerwise"
    run_cli("export", layerwise_run, "--arch", json.dumps({"subspace": "big", "layers": 2, "heads": [4, 3], "hidden": 48,
                                                           "mlp_ratio": [1.5, 2.0]}), "--out", out["layerwise"])
    out["classifier"] = base / "classifier"
    run_cli("finetune", out["student"], "--max-train", 64, "--save", out["classifier"])
    return out


@pytest.mark.parametrize("name, model_class, output", [
    ("bert", "BertModel", "last_hidden_state"),
    ("student", "StudentModel", "last_hidden_state"),
    ("layerwise", "StudentModel", "last_hidden_state"),
    ("classifier", "StudentForSequenceClassification", "logits"),
])
def test_onnx_export_matches_pytorch(tmp_path, students, name, model_class, output):
    assert json.loads((students[name] / "config.json").read_text())["architectures"] == [model_class]
    out = tmp_path / "onnx"
    message = run_cli("onnx", students[name], "--out", out)
    assert "onnxruntime vs PyTorch" in message
    record = json.loads((out / "autodistil_onnx.json").read_text())
    assert record["output"] == output and record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["max_abs_diff"] <= 1e-4
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert ("auto_map" in config) == (out / "modeling_student.py").is_file() == (model_class != "BertModel")
    from transformers import AutoTokenizer

    from autodistil_evo.export.trust import model_folder

    _, remote = model_folder(out)  # our own model file: allowed without --trust-remote-code
    assert AutoTokenizer.from_pretrained(out, trust_remote_code=remote)("a test")["input_ids"]
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == [output]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in dims)  # batch and sequence are dynamic


def test_int8_classifier_and_onnxruntime_bench(tmp_path, students):
    out = tmp_path / "onnx-int8"
    message = run_cli("onnx", students["classifier"], "--out", out, "--quantize", "int8")
    assert "int8: max abs difference" in message and "predictions agree with fp32" in message
    record = json.loads((out / "autodistil_onnx.json").read_text())
    assert 0.0 <= record["int8_agreement"] <= 1.0 and (out / "model.int8.onnx").is_file()
    rows = json.loads(run_cli("bench", out, "--runtime", "onnxruntime", "--seq-len", 16, "--repeats", 3, "--json"))
    assert [r["model"].rsplit("/", 1)[1] for r in rows] == ["model.onnx", "model.int8.onnx"]
    assert all(r["runtime"] == "onnxruntime" and 0 < r["latency_ms"] <= r["p90_ms"] for r in rows)
    table = run_cli("bench", out, students["student"] / "..", "--runtime", "onnxruntime", "--seq-len", 16, expect=2)
    assert "no model.onnx" in table


def test_finetune_save_reloads(students):
    from transformers import AutoModelForSequenceClassification

    config = json.loads((students["classifier"] / "config.json").read_text())
    assert config["id2label"] == {"0": "rotten", "1": "fresh"}
    model = AutoModelForSequenceClassification.from_pretrained(students["classifier"], trust_remote_code=True)
    assert model.num_labels == 2
    out = run_cli("finetune", students["student"], students["bert"], "--max-train", 8, "--save", students["classifier"], expect=2)
    assert "exactly one MODEL_DIR" in out


@pytest.mark.parametrize("make_args, message", [
    (lambda s, t: [t], "not a Hugging Face model folder"),
    (lambda s, t: [s["student"], "--opset", "5"], "--opset 5: the ONNX exporter refused"),
])
def test_onnx_bad_input(tmp_path, students, make_args, message):
    out = tmp_path / "out"
    assert message in run_cli("onnx", *make_args(students, tmp_path), "--out", out, expect=2)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_onnx_refuses_a_non_empty_out(tmp_path, students):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "--force" in run_cli("onnx", students["student"], "--out", out, expect=2)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_latency_objective_measured_in_onnxruntime(tmp_path, tiny_search):
    out = tmp_path / "latency-search"
    run_cli("evolve", tiny_search / "run", "--out", out, "--subspace", "small", "--objectives", "loss,latency",
            "--latency-runtime", "onnxruntime", "--population", 2, "--generations", 1, "--eval-samples", 4)
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["latency_ms"] > 0 for r in rows)
    measured = json.loads((out / "search.json").read_text())["latency_measured_on"]
    assert measured["runtime"] == "onnxruntime" and measured["cpus"] >= 1
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert all(f["latency_ms"] > 0 for f in front)


def test_without_the_extra_the_command_names_it(tmp_path, students, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    out = run_cli("onnx", students["student"], "--out", tmp_path / "x", expect=2)
    assert "pip install 'autodistil-evo[onnx]'" in out and "onnxruntime is missing" in out
    assert not (tmp_path / "x").exists()
