import json

import numpy as np
import pytest
import torch
from helpers import run_cli

from autodistil_evo import __version__
from autodistil_evo.data import BlockWriter, build_corpus, hash_bucket
from autodistil_evo.teacher import load_teacher


def test_help_lists_only_real_commands():
    out = run_cli("--help")
    for command in ("info", "space"):
        assert command in out
    assert run_cli("--version").strip().endswith(__version__)


def test_info_prints_teacher_and_corpus(tiny_teacher, corpus_file):
    out = run_cli("info", "--teacher", tiny_teacher, "--corpus", corpus_file, "--seq-len", 32)
    assert "2 layers, hidden 64, 4 heads x 16, FFN 128" in out
    assert "corpus documents" in out and "held-out" in out


def test_split_is_deterministic_and_disjoint(tiny_teacher, corpus_file, tmp_path, monkeypatch):
    """The store's held-out documents are exactly those whose text hashes below the fraction."""
    tokenizer = load_teacher(str(tiny_teacher)).tokenizer
    texts = [t for t in corpus_file.read_text().splitlines() if t.strip()]
    expected = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts if hash_bucket(t) < 0.2)
    for cache in ("a", "b"):
        monkeypatch.setenv("AUTODISTIL_EVO_CACHE", str(tmp_path / cache))
        packed = build_corpus([str(corpus_file)], tokenizer, 32, 0.2)
        index = json.loads((packed.path / "index.json").read_text())
        assert index["heldout"]["tokens"] == expected and index["train"]["documents"] > index["heldout"]["documents"] > 0


def test_blocks_are_full_and_framed(tmp_path):
    writer = BlockWriter(tmp_path / "b.bin", 6, 101, 102, np.int64)
    writer.add([[5, 6, 7], [8, 9]])
    writer.add([[10, 11, 12, 13]])
    writer.close()
    # stream 5 6 7 S 8 9 S 10 11 12 13 S = 12 tokens -> 3 blocks of 4 body tokens
    blocks = np.fromfile(tmp_path / "b.bin", dtype=np.int64).reshape(-1, 6)
    assert blocks.shape == (3, 6) and (blocks[:, 0] == 101).all() and (blocks[:, -1] == 102).all()
    assert blocks[0].tolist() == [101, 5, 6, 7, 102, 102]
    assert blocks[1].tolist() == [101, 8, 9, 102, 10, 102]


def test_build_corpus_shapes(tiny_teacher, corpus_file):
    teacher = load_teacher(str(tiny_teacher))
    packed = build_corpus([str(corpus_file)], teacher.tokenizer, seq_len=32, heldout_fraction=0.1)
    assert packed.train.shape[1] == 32 and packed.heldout.shape[1] == 32
    assert packed.train_documents + packed.heldout_documents == packed.documents
    body_tokens = (packed.train.shape[0] + packed.heldout.shape[0]) * 30
    assert body_tokens <= packed.tokens + packed.documents  # separators included


def _file(name, content):
    def make(directory):
        path = directory / name
        if content is not None:
            path.write_bytes(content)
        return path

    return make


@pytest.mark.parametrize(
    "make, message",
    [
        (_file("missing.txt", None), "corpus file not found"),
        (_file("empty.txt", b""), "corpus file is empty"),
        (_file("blank.txt", b"\n\n  \n"), "corpus has no non-empty text"),
        (_file("data.bin", b"\x00\x01"), "unsupported corpus file type"),
        (_file("bad.parquet", b"not parquet"), "cannot read as parquet"),
    ],
)
def test_corpus_errors_name_the_file(tmp_path, tiny_teacher, make, message):
    path = make(tmp_path)
    out = run_cli("info", "--teacher", tiny_teacher, "--corpus", path, expect=2)
    assert message in out and str(path) in out
    assert "Traceback" not in out


def test_teacher_errors(tmp_path):
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    out = run_cli("info", "--teacher", gpt, expect=2)
    assert "model_type 'gpt2' is not supported; supported teacher families: bert, roberta, xlm-roberta, camembert, " \
        "electra, distilbert" in out and str(gpt) in out
    assert len(out.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no config.json" in run_cli("info", "--teacher", empty, expect=2)
    out = run_cli("info", "--teacher", "no-such-org/no-such-model", expect=2)
    assert "local model folder" in out


def test_verbose_shows_traceback(tmp_path):
    from autodistil_evo.errors import UserError

    with pytest.raises(UserError, match="nothing-here"):
        run_cli("-v", "info", "--teacher", tmp_path / "nothing-here")


def test_teacher_loads_with_sdpa_and_the_tap_stops_at_its_layer(tiny_teacher):
    from transformers import BertModel

    from autodistil_evo.teacher import RelationTap

    teacher = load_teacher(str(tiny_teacher))
    assert teacher.model.config._attn_implementation == "sdpa"
    assert not any(p.requires_grad for p in teacher.model.parameters())
    ids = torch.tensor([[101, 2054, 2003, 102, 0], [101, 2054, 102, 0, 0]])
    mask = (ids != 0).long()
    assert teacher.model(input_ids=ids).last_hidden_state.shape == (2, 5, 64)

    # The same Q/K/V as an eager forward of the whole model computes at layer 0 ...
    eager = BertModel.from_pretrained(tiny_teacher, attn_implementation="eager").eval()
    seen = {}
    handles = [getattr(eager.encoder.layer[0].attention.self, p).register_forward_hook(
        lambda m, i, o, p=p: seen.__setitem__(p, o)) for p in ("query", "key", "value")]
    with torch.no_grad():
        eager(input_ids=ids, attention_mask=mask)
    for h in handles:
        h.remove()
    # ... while nothing after the tapped Q/K/V runs: not the layer's FFN, not layer 1.
    ran = []
    later = [teacher.model.encoder.layer[0].intermediate, teacher.model.encoder.layer[1]]
    watch = [m.register_forward_hook(lambda *a: ran.append(1)) for m in later]
    with RelationTap(teacher.model, 0) as tap:
        qkv = tap(teacher.model, ids, mask)
    for h in watch:
        h.remove()
    assert ran == []
    for got, part in zip(qkv, ("query", "key", "value")):
        assert (got - seen[part]).abs().max().item() <= 1e-6
    # Closed: its hooks are gone, and the teacher runs to the end again.
    assert not teacher.model.encoder.layer[0].attention.self.query._forward_hooks
    assert teacher.model(input_ids=ids).last_hidden_state.shape == (2, 5, 64)
