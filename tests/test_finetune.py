"""finetune as a user evaluating students runs it: pair and regression tasks, files / dataset
folders, an lr grid picked on dev, seeds as mean ± std, metrics, --save, bad input."""

import json

import numpy as np
import pytest
import torch
from helpers import run_cli

from autodistil_evo.supernet.modeling_student import StudentConfig, StudentForSequenceClassification

WORDS = {0: ["bad", "awful", "dull", "boring"], 1: ["good", "great", "fun", "lovely"]}
# heads 3 x head_dim 16 = 48 != hidden 64: BertModel cannot express it, so it exports as StudentModel.
STUDENT_ARCH = {"subspace": "big", "layers": 2, "heads": 3, "hidden": 64, "mlp_ratio": 2.0}
BERT_ARCH = {"subspace": "big", "layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0}


@pytest.fixture(scope="module")
def exports(tiny_search, tmp_path_factory):
    base = tmp_path_factory.mktemp("finetune-exports")
    out = {}
    for name, arch in (("student", STUDENT_ARCH), ("bert", BERT_ARCH)):
        out[name] = base / name
        run_cli("export", tiny_search / "run", "--arch", json.dumps(arch), "--out", out[name])
    assert json.loads((out["student"] / "config.json").read_text())["model_type"] == "autodistil_student"
    assert json.loads((out["bert"] / "config.json").read_text())["model_type"] == "bert"
    return out


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pair_rows(n, seed):
    """The label is the sentiment of the *second* text: learnable only if the pair column is fed in."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label, other = int(rng.integers(2)), int(rng.integers(2))
        rows.append({"premise": f"the film was {WORDS[other][rng.integers(4)]}",
                     "hypothesis": f"i found it {WORDS[label][rng.integers(4)]}", "label": ["no", "yes"][label]})
    return rows


def regression_rows(n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        rows.append({"text": f"the film was {WORDS[label][rng.integers(4)]} , {rng.integers(40)} people came",
                     "score": round(label * 4 + rng.random(), 2)})
    return rows


def test_pair_task_on_a_student_model_export(tmp_path, exports):
    train = write_jsonl(tmp_path / "train.jsonl", pair_rows(240, 0))
    test = write_jsonl(tmp_path / "test.jsonl", pair_rows(60, 1))
    r = json.loads(run_cli("finetune", exports["student"], "--train", train, "--eval", test, "--text-column", "premise",
                           "--text-pair-column", "hypothesis", "--epochs", 12, "--batch-size", 8, "--lr", 1e-3, "--json"))
    assert r["problem"] == "classification" and set(r["test"]) == {"accuracy", "f1", "mcc"}
    assert r["test"]["accuracy"]["mean"] > 0.8 and r["test"]["mcc"]["mean"] > 0.6


@pytest.mark.parametrize("kind", ["student", "bert"])
def test_regression_task_on_every_export(tmp_path, exports, kind):
    train = write_jsonl(tmp_path / "train.jsonl", regression_rows(160, 0))
    test = write_jsonl(tmp_path / "test.jsonl", regression_rows(60, 1))
    save = tmp_path / "saved"
    r = json.loads(run_cli("finetune", exports[kind], "--train", train, "--eval", test, "--label-column", "score",
                           "--epochs", 12, "--batch-size", 8, "--lr", 1e-3, "--save", save, "--json"))
    assert r["problem"] == "regression" and r["metric"] == "pearson"
    assert r["test"]["pearson"]["mean"] > 0.8 and r["test"]["spearman"]["mean"] > 0.6
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(save, trust_remote_code=True).eval()
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    batch = AutoTokenizer.from_pretrained(save)(["the film was great", "the film was awful"], return_tensors="pt",
                                                 padding=True)
    with torch.no_grad():
        good, bad = model(**batch).logits.squeeze(-1).tolist()
    assert good > bad + 1.0


def test_stsb_is_an_embedded_pair_regression_task(exports):
    from autodistil_evo.data import sts_benchmark
    from autodistil_evo.export.finetune import load_task

    task = load_task("stsb")
    assert task.problem == "regression" and [len(task.train), len(task.dev), len(task.test)] == [5749, 1500, 1379]
    gold = sts_benchmark("test")
    assert task.test[0] == (gold.first[0], gold.second[0], gold.gold[0]) and isinstance(task.test[0][2], float)
    r = json.loads(run_cli("finetune", exports["bert"], "--task", "stsb", "--max-train", 64, "--epochs", 1, "--json"))
    assert r["problem"] == "regression" and set(r["test"]) == {"pearson", "spearman", "mse"}


def test_lr_grid_and_seeds(tmp_path, exports):
    rows = [{"text": f"{r['premise']} , {r['hypothesis']} , {i % 13} stars", "label": r["label"]}
            for i, r in enumerate(pair_rows(200, 2))]
    train = write_jsonl(tmp_path / "train.jsonl", rows[:150])
    test = write_jsonl(tmp_path / "test.jsonl", rows[150:])
    r = json.loads(run_cli("finetune", exports["bert"], "--train", train, "--eval", test, "--epochs", 6, "--batch-size", 8,
                           "--lr", "1e-6,1e-3", "--seeds", 2, "--seed", 5, "--json"))
    assert set(r["lr_grid"]) == {"1e-06", "0.001"} and r["seeds"] == [5, 6] and r["group_by_length"] is False, r
    assert r["micro_batches"] == 1
    assert r["lr"] == 1e-3 and r["lr_grid"]["0.001"] > r["lr_grid"]["1e-06"], r  # picked by mean dev accuracy
    accuracy = r["test"]["accuracy"]
    assert len(accuracy["values"]) == 2 and accuracy["std"] == pytest.approx(float(np.std(accuracy["values"], ddof=1)))
    assert r["test_accuracy"] == pytest.approx(np.mean(accuracy["values"]))


def test_dataset_folder_task(tmp_path, exports):
    folder = tmp_path / "my-task"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", regression_rows(80, 0))
    write_jsonl(folder / "validation.jsonl", regression_rows(30, 1))
    r = json.loads(run_cli("finetune", exports["bert"], "--task", folder, "--label-column", "score", "--problem",
                           "classification", "--group-by-length", "--micro-batches", 2, "--json"))
    # --problem classification on fractional scores: every distinct score is a class; validation is the test split.
    assert r["problem"] == "classification" and r["task"] == str(folder) and r["group_by_length"] is True
    assert r["micro_batches"] == 2


@pytest.mark.parametrize("case, message", [
    ("missing", "missing column(s) label"),
    ("one-label", "column 'label' has one value only in the training split"),
    ("offline", "--task no-such-dataset-xyz: unknown task or dataset not available offline"),
    ("bad-lr", "Invalid value for '--lr'"),
    ("bad-metric", "--metric: pearson is not a classification metric"),
])
def test_bad_task_input(tmp_path, exports, monkeypatch, case, message):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"t {i}", "label": "a"} for i in range(20)])
    args = ["--train", train, "--eval", train]
    if case == "missing":
        args = ["--train", write_jsonl(tmp_path / "x.jsonl", [{"text": "t", "y": 1}]), "--eval", train]
    if case == "offline":
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        args = ["--task", "no-such-dataset-xyz"]
    if case in ("bad-lr", "bad-metric"):
        write_jsonl(train, [{"text": f"t {i}", "label": i % 2} for i in range(20)])
        args += ["--lr", "fast"] if case == "bad-lr" else ["--metric", "pearson"]
    save = tmp_path / "kept"
    out = run_cli("finetune", exports["bert"], *args, "--save", save, expect=2)
    assert message in out and not save.exists()
    if case != "bad-lr":
        assert len([line for line in out.splitlines() if line.strip()]) == 1, out


def test_student_head_follows_bert_problem_types():
    torch.manual_seed(0)
    config = StudentConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=3, head_dim=8,
                           intermediate_size=64, max_position_embeddings=16, num_labels=3)
    ids = torch.randint(1, 50, (4, 6))
    model = StudentForSequenceClassification(config).eval()
    logits = model(ids).logits
    single = model(ids, labels=torch.tensor([0, 2, 1, 0])).loss
    assert model.config.problem_type == "single_label_classification"
    assert torch.allclose(single, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2, 1, 0])))
    multi_model = StudentForSequenceClassification(StudentConfig(**{**config.to_dict(), "problem_type": None})).eval()
    multi_model.load_state_dict(model.state_dict())
    targets = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    assert torch.allclose(multi_model(ids, labels=targets).loss,
                          torch.nn.functional.binary_cross_entropy_with_logits(logits, targets))
    assert multi_model.config.problem_type == "multi_label_classification"
    reg = StudentForSequenceClassification(StudentConfig(**{**config.to_dict(), "num_labels": 1, "problem_type": None})).eval()
    y = torch.tensor([0.5, 1.5, 2.0, 3.0])
    out = reg(ids, labels=y)
    assert reg.config.problem_type == "regression"
    assert torch.allclose(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), y))
    loss, logits_tuple = reg(ids, labels=y, return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(logits_tuple, out.logits)
    with pytest.raises(TypeError):
        model(ids, not_an_argument=1)  # unknown arguments are not swallowed
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, position_ids=torch.arange(6)[None])


def test_length_grouped_batches_cover_every_row_once_with_less_padding():
    import random

    from autodistil_evo.export.finetune import _batches

    lengths = [random.Random(i).randint(4, 64) for i in range(2000)]
    padded = lambda batches: sum(max(lengths[i] for i in b) * len(b) for b in batches)  # noqa: E731
    grouped = _batches(2000, 32, random.Random(0), lengths)
    plain = _batches(2000, 32, random.Random(0))
    for batches in (grouped, plain):
        assert sorted(i for b in batches for i in b) == list(range(2000))
        assert sum(len(b) < 32 for b in batches) <= 2  # at most one short batch per mega-batch of 1,600 rows
    assert padded(grouped) < 0.6 * padded(plain), (padded(grouped), padded(plain))
    order = list(range(2000))
    random.Random(0).shuffle(order)
    assert plain == [order[i : i + 32] for i in range(0, 2000, 32)]  # the default: one shuffle, as before the option
    assert grouped == _batches(2000, 32, random.Random(0), lengths)  # the seed fixes the order
    assert grouped != _batches(2000, 32, random.Random(1), lengths)
    starts = [b[0] for b in grouped]
    assert sorted(starts, key=lengths.__getitem__) != starts  # batches are shuffled, not served shortest first


def test_a_run_does_not_depend_on_the_process_random_state(exports):
    """The new head is initialised under each run's seed. Before, it drew from whatever state the
    process's torch RNG was in, so the same `finetune` on the embedded task gave other numbers."""
    from autodistil_evo.export.finetune import Task, _load, finetune

    rows = [(r["text"], None, r["score"]) for r in regression_rows(120, 4)]  # MSE moves with any weight
    task = Task("t", rows[:80], rows[80:100], rows[100:], None)
    results = []
    for draws in (0, 7):
        torch.rand(draws)  # other work in the process moved the global RNG
        results.append(finetune(exports["student"], task, epochs=2, batch_size=8, lrs=(1e-3,), seeds=2))
    assert results[0]["test"] == results[1]["test"] and results[0]["dev"] == results[1]["dev"]
    heads = [_load(exports["student"], task, False, s)[0].classifier.weight for s in (0, 0, 1)]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_micro_batches_give_the_plain_batch_update(tiny_teacher):
    """--micro-batches: each batch is cut into parts of similar length (less padding); with dropout
    off the weights after training equal those of whole batches, so only the time changes."""
    import autodistil_evo.export.finetune as ft

    rng = np.random.default_rng(0)
    # lengths from 1 to 40 words: the micro-batches pad to very different lengths
    rows = [(" ".join(rng.choice(WORDS[y % 2], size=1 + i % 40)), None, y % 2) for i, y in enumerate(range(96))]
    task = ft.Task("t", rows, rows[:8], rows[:8], ["neg", "pos"])
    lengths = ft._lengths(ft.AutoTokenizer.from_pretrained(tiny_teacher), rows, 64)
    parts = ft._micro_batches(list(range(32)), lengths, parts=2)
    assert sorted(parts[0] + parts[1]) == list(range(32)) and len(parts[0]) == len(parts[1]) == 16
    assert max(lengths[i] for i in parts[0]) <= min(lengths[i] for i in parts[1])
    weights = {}
    for micro in (1, 2, 4):
        model, tokenizer = ft._load(tiny_teacher, task, False, 0)
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        ft.train_once(model, tokenizer, task, rows, 1, 32, 1e-3, 64, seed=0, micro_batches=micro)
        weights[micro] = torch.cat([p.detach().flatten() for p in model.parameters()])
    start = torch.cat([p.detach().flatten() for p in ft._load(tiny_teacher, task, False, 0)[0].parameters()])
    assert (weights[1] - start).abs().max() > 1e-3  # training moved the weights
    for micro in (2, 4):
        assert torch.allclose(weights[micro], weights[1], atol=2e-5), (weights[micro] - weights[1]).abs().max()


def test_task_distillation_learns_from_the_teacher_not_the_labels(tmp_path, exports):
    """--teacher: a model fine-tuned on the task (kept with --save) labels the training rows softly.
    With --kd-alpha 1 a student trained on *shuffled* labels still learns the task from the teacher;
    without the teacher the same labels teach it nothing."""
    rows = pair_rows(240, 0)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", pair_rows(60, 1))
    pair = ["--text-column", "premise", "--text-pair-column", "hypothesis", "--epochs", 12, "--batch-size", 8, "--lr", 1e-3]
    teacher = tmp_path / "teacher"
    r = json.loads(run_cli("finetune", exports["bert"], "--train", train, "--eval", test, *pair, "--save", teacher, "--json"))
    assert r["test"]["accuracy"]["mean"] > 0.8 and r["distillation"] is None
    labels = [row["label"] for row in rows]
    np.random.default_rng(3).shuffle(labels)
    noise = write_jsonl(tmp_path / "noise.jsonl", [{**row, "label": y} for row, y in zip(rows, labels)])
    plain = json.loads(run_cli("finetune", exports["student"], "--train", noise, "--eval", test, *pair, "--json"))
    taught = json.loads(run_cli("finetune", exports["student"], "--train", noise, "--eval", test, *pair, "--teacher", teacher,
                                "--kd-alpha", 1, "--json"))
    assert plain["test"]["accuracy"]["mean"] < 0.7 < 0.8 < taught["test"]["accuracy"]["mean"], (plain["test"], taught["test"])
    assert taught["distillation"] == {"teacher": str(teacher), "alpha": 1.0, "temperature": 2.0}


def test_soft_target_loss():
    from autodistil_evo.export.finetune import SoftTargets

    teacher = torch.tensor([[2.0, -1.0], [0.0, 3.0], [1.0, 1.0]])
    student = torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    t = 2.0
    p, q = torch.softmax(teacher[[0, 2]] / t, -1), torch.softmax(student / t, -1)
    kl = float((p * (p / q).log()).sum(-1).mean()) * t * t  # KL(teacher || student), averaged over rows
    assert float(SoftTargets(teacher, 1.0, t).loss(torch.tensor(9.0), student, [0, 2])) == pytest.approx(kl, rel=1e-5)
    assert float(SoftTargets(teacher, 0.25, t).loss(torch.tensor(9.0), student, [0, 2])) == pytest.approx(0.75 * 9 + 0.25 * kl,
                                                                                                     rel=1e-5)
    assert float(SoftTargets(teacher, 0.5, t).loss(torch.tensor(1.0), teacher[[1]], [1])) == pytest.approx(0.5)  # agree: no KL
    regression = SoftTargets(torch.tensor([[1.0], [3.0]]), 1.0, t)
    assert float(regression.loss(torch.tensor(0.0), torch.tensor([[2.0], [2.0]]), [0, 1])) == pytest.approx(1.0)  # MSE


@pytest.mark.parametrize("case, message", [
    ("encoder", "not a fine-tuned sequence classifier (architectures: BertModel)"),
    ("outputs", "has 1 output(s), the task"),
    ("labels", "labels ['x', 'y'] are not the task's ['a', 'b']"),
])
def test_bad_teacher(tmp_path, exports, case, message):
    rows = [{"text": f"t {i}", "label": "ab"[i % 2]} for i in range(20)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    teacher = exports["bert"]
    if case != "encoder":
        teacher = tmp_path / "teacher"
        teacher.mkdir()
        config = json.loads((exports["bert"] / "config.json").read_text())
        config["architectures"] = ["BertForSequenceClassification"]
        config["id2label"] = {"0": "score"} if case == "outputs" else {"0": "x", "1": "y"}
        (teacher / "config.json").write_text(json.dumps(config))
    save = tmp_path / "kept"
    out = run_cli("finetune", exports["bert"], "--train", train, "--eval", train, "--teacher", teacher, "--save", save,
                  expect=2)
    assert message in out and not save.exists()
    assert len([line for line in out.splitlines() if line.strip()]) == 1, out
