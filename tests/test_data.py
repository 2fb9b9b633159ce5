"""The prepared corpus store: same blocks as the in-memory path, flat memory, damage detected,
the proxy sample, O(batch) step indices, and the data as part of a run's identity."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from helpers import run_cli

from autodistil_evo.data import build_corpus, permute, proxy_sample
from autodistil_evo.distill.trainer import step_samples
from autodistil_evo.errors import UserError
from autodistil_evo.teacher import load_teacher


def in_memory(corpus, tokenizer, seq_len, fraction):
    """The data path before the store: the reference kept in benchmarks/data_scale.py."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from data_scale import in_memory_blocks
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return in_memory_blocks(corpus, tokenizer, seq_len, fraction)


@pytest.fixture(scope="module")
def tokenizer():
    return load_teacher(None).tokenizer


@pytest.mark.parametrize("which", ["embedded", "multi-file"])
def test_store_yields_the_in_memory_blocks(tokenizer, corpus_file, tmp_path, which):
    if which == "embedded":
        corpus, seq_len, fraction = None, 64, 0.05
    else:
        other = tmp_path / "other.jsonl"
        other.write_text("".join(json.dumps({"text": f"line {i}: " + "word " * (i % 37)}) + "\n" for i in range(800)))
        corpus, seq_len, fraction = [str(corpus_file), str(other)], 32, 0.1
    packed = build_corpus(corpus, tokenizer, seq_len, fraction)
    train, heldout = in_memory(corpus, tokenizer, seq_len, fraction)
    assert len(train) > 100 and len(heldout) > 5
    assert torch.equal(packed.train[:], train) and torch.equal(packed.heldout[:], heldout)
    assert packed.train[np.array([3, 1])].tolist() == train[[3, 1]].tolist()
    assert np.memmap(packed.path / "train.bin", dtype=np.uint16).size == train.numel()  # 2 bytes a token
    again = build_corpus(corpus, tokenizer, seq_len, fraction)  # reused, not prepared again
    assert again.path == packed.path and (packed.path / "index.json").stat().st_mtime_ns == (again.path / "index.json").stat().st_mtime_ns


def test_damaged_store_is_rebuilt_with_a_warning(tokenizer, corpus_file):
    packed = build_corpus([str(corpus_file)], tokenizer, 32, 0.1)
    reference = packed.train[:].clone()
    train_bin = packed.path / "train.bin"
    with open(train_bin, "r+b") as f:
        f.truncate(train_bin.stat().st_size // 2)  # a partial file
    warnings = []
    rebuilt = build_corpus([str(corpus_file)], tokenizer, 32, 0.1, warn=warnings.append)
    assert len(warnings) == 1 and "damaged" in warnings[0] and "rebuilding" in warnings[0]
    assert torch.equal(rebuilt.train[:], reference)
    data = bytearray(train_bin.read_bytes())  # same size, other content: caught by the sha256
    data[100] ^= 0xFF
    train_bin.write_bytes(bytes(data))
    warnings.clear()
    assert torch.equal(build_corpus([str(corpus_file)], tokenizer, 32, 0.1, warn=warnings.append).train[:], reference)
    assert len(warnings) == 1 and "sha256" in warnings[0]


def test_interrupted_preparation_leaves_nothing(tokenizer, corpus_file, monkeypatch):
    from autodistil_evo import data

    root = data.store_root()
    before = set(root.iterdir()) if root.exists() else set()

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "hash_bucket", broken)  # dies inside the first batch
    with pytest.raises(KeyboardInterrupt):
        build_corpus([str(corpus_file)], tokenizer, 40, 0.1)
    after = {p for p in root.iterdir() if not p.name.endswith(".lock")}
    assert after == {p for p in before if not p.name.endswith(".lock")}


@pytest.mark.slow
def test_two_processes_prepare_one_store(tmp_path, corpus_file):
    env = {**os.environ, "AUTODISTIL_EVO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "autodistil_evo.cli", "prepare", "--corpus", str(corpus_file)]
    procs = [subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    stores = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(stores) == 1 and all(str(stores[0]) in out for out, _ in outs)


@pytest.mark.slow
def test_memory_is_flat_in_corpus_size(tmp_path, recipe_file, monkeypatch):
    """`info` and `train --steps 2` on a ~0.3M- and a ~3.5M-token corpus: anonymous memory barely moves.

    The in-memory path took about 21 bytes a token (~70 MB more for the larger corpus)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # the benchmark's probe, one implementation (scripts, not a package)
    from data_scale import peak_rss_anon

    words = (REPO / "README.md").read_text().split()
    rng = np.random.default_rng(0)
    corpora = {}
    for name, lines in (("small", 6_000), ("large", 70_000)):
        path = tmp_path / f"{name}.txt"
        with open(path, "w") as f:
            for i in range(lines):
                f.write(f"{i} " + " ".join(rng.choice(words, 40)) + "\n")
        corpora[name] = path
    env = {**os.environ, "AUTODISTIL_EVO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    peaks = {}
    for name, path in corpora.items():
        info = [sys.executable, "-m", "autodistil_evo.cli", "info", "--corpus", str(path), "--seq-len", 32]
        train = [sys.executable, "-m", "autodistil_evo.cli", "train", "--recipe", str(recipe_file), "--corpus", str(path),
                 "--out", str(tmp_path / f"run-{name}"), "--steps", 2, "--subspace", "small"]
        peaks[name] = {what: peak_rss_anon([str(c) for c in command], env, interval=0.01)[1]
                       for what, command in (("info", info), ("train", train))}
    tokens = json.loads(next((tmp_path / "cache").glob("*/index.json")).read_text())  # a store exists
    assert tokens["schema"] == 1
    for what in ("info", "train"):
        growth = peaks["large"][what] - peaks["small"][what]
        assert growth < 30e6, f"{what}: RssAnon grew by {growth / 1e6:.0f} MB ({peaks})"


def test_proxy_sample_is_seeded_and_spread(tokenizer):
    packed = build_corpus(None, tokenizer, 64, 0.05)
    sample = proxy_sample(packed.heldout, 16)
    assert torch.equal(sample, proxy_sample(packed.heldout, 16)) and sample.shape == (16, 64)
    chosen = np.sort(np.random.default_rng(0).choice(len(packed.heldout), 16, replace=False))
    assert torch.equal(sample, packed.heldout[chosen]) and chosen.max() > len(packed.heldout) // 2  # not just the first blocks
    assert len(proxy_sample(packed.heldout, 10_000)) == len(packed.heldout)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000, 4099])
def test_permutation_is_a_seeded_bijection(n):
    order = permute(np.arange(n), n, key=3)
    assert sorted(order.tolist()) == list(range(n))
    assert np.array_equal(order, permute(np.arange(n), n, key=3))
    if n >= 100:
        assert not np.array_equal(order, permute(np.arange(n), n, key=4))
        assert np.array_equal(permute(np.arange(10, 20), n, key=3), order[10:20])  # evaluated pointwise


def test_step_samples_cover_each_epoch_once():
    n, per_step = 50, 8
    seen = torch.cat([step_samples(step, per_step, n, seed=1) for step in range(25)])  # 200 = 4 epochs
    for epoch in range(4):
        assert sorted(seen[epoch * n : (epoch + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(seen[:n], seen[n : 2 * n])


def test_resume_on_other_data_is_refused(tmp_path, recipe_file, corpus_file):
    run = tmp_path / "run"
    run_cli("train", "--recipe", recipe_file, "--out", run, "--steps", 1, "--subspace", "small", "--save-every", 1)
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text().upper())
    before = sorted(p.name for p in (run / "small" / "checkpoints").iterdir())
    out = run_cli("train", "--recipe", recipe_file, "--out", run, "--steps", 2, "--subspace", "small", "--resume",
                  "--corpus", other, expect=2)
    assert "cannot resume, the run differs in: corpus_fingerprint" in out
    assert sorted(p.name for p in (run / "small" / "checkpoints").iterdir()) == before
    meta = json.loads((run / "small" / "superlm.json").read_text())
    assert meta["corpus_store"]["fingerprint"] and Path(meta["corpus_store"]["path"]).is_dir()


def test_search_and_export_read_the_recorded_store(tmp_path, recipe_file, corpus_file):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_file.read_text())
    run = tmp_path / "run"
    run_cli("train", "--recipe", recipe_file, "--corpus", corpus, "--out", run, "--steps", 0)
    corpus.unlink()  # the store, not the corpus files, is what evolve and export read
    run_cli("evolve", run, "--out", tmp_path / "search", "--population", 4, "--generations", 1, "--eval-samples", 4)
    arch = {"subspace": "small", "layers": 1, "heads": 2, "hidden": 16, "mlp_ratio": 1.0}
    assert "max abs difference" in run_cli("export", run, "--arch", json.dumps(arch), "--out", tmp_path / "student")
    store = Path(json.loads((run / "small" / "superlm.json").read_text())["corpus_store"]["path"])
    (store / "heldout.bin").unlink()  # store gone and corpus gone: one clear line
    out = run_cli("evolve", run, "--out", tmp_path / "search2", "--eval-samples", 4, expect=2)
    assert "no longer gives the same data" in out and not (tmp_path / "search2").exists()


def test_superlms_of_other_corpora_are_not_searched_together(tmp_path, recipe_file, corpus_file):
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text().lower())
    run = tmp_path / "run"
    run_cli("train", "--recipe", recipe_file, "--out", run, "--steps", 0, "--subspace", "small")
    run_cli("train", "--recipe", recipe_file, "--out", run, "--steps", 0, "--subspace", "big", "--corpus", other)
    out = run_cli("evolve", run, "--out", tmp_path / "search", "--eval-samples", 4, expect=2)
    assert "trained with another corpus" in out and not (tmp_path / "search").exists()


def test_unknown_dataset_offline_is_one_line(tokenizer):
    with pytest.raises(UserError, match="needs network"):
        build_corpus(["no-such-org/no-such-corpus"], tokenizer, 32, 0.1)


def test_block_sentences_takes_the_first_whole_document_of_each_block():
    """One text per block, a fixed [blocks, length] shape: the first document bounded by [SEP] on both sides,
    else the block's longest piece, cut to fit and wrapped in [CLS] ... [SEP]."""
    from autodistil_evo.data import block_sentences

    cls, sep, pad = 101, 102, 0
    blocks = torch.tensor([
        [cls, 5, 6, sep, 7, 8, 9, sep, 10, 11, sep],    # the tail 5 6 is cut off; 7 8 9 is the first whole one
        [cls, 5, sep, 7, sep, 12, 13, 14, 15, 16, sep],  # whole pieces too short (7): the longest piece
        [cls, 20, 21, 22, 23, 24, 25, 26, 27, 28, sep],  # no document boundary: the block's body, cut to length
    ])
    ids, mask = block_sentences(blocks, cls, sep, pad, length=6, min_tokens=2)
    assert ids.tolist() == [[cls, 7, 8, 9, sep, pad], [cls, 12, 13, 14, 15, sep], [cls, 20, 21, 22, 23, sep]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6, [1] * 6]


def _block_sentence(block: list, cls: int, sep: int, pad: int, length: int, min_tokens: int) -> list:
    """The rule of `block_sentences` for one block, written out in Python: the reference it must equal."""
    body = block[1:-1]
    cuts = [i for i, t in enumerate(body) if t == sep]
    pieces = [body[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(body)])]
    whole = [p for p in pieces[1 : len(cuts)] if len(p) >= min_tokens]
    ids = [cls, *(whole[0] if whole else max(pieces, key=len))[: length - 2], sep]
    return ids + [pad] * (length - len(ids))


def test_block_sentences_equal_the_rule_on_random_blocks():
    """Batched, the texts are the rule's for every block: many, one or no [SEP]s, empty pieces, ties in length."""
    from autodistil_evo.data import block_sentences

    cls, sep, pad = 101, 102, 0
    g = torch.Generator().manual_seed(0)
    for min_tokens, length, p_sep in ((3, 12, 0.2), (1, 5, 0.5), (2, 40, 0.05), (3, 8, 0.0)):
        tokens = torch.randint(5, 50, (64, 30), generator=g)
        tokens[torch.rand(64, 30, generator=g) < p_sep] = sep
        blocks = torch.cat([torch.full((64, 1), cls), tokens, torch.full((64, 1), sep)], 1)
        ids, mask = block_sentences(blocks, cls, sep, pad, length, min_tokens)
        expected = [_block_sentence(b, cls, sep, pad, length, min_tokens) for b in blocks.tolist()]
        assert ids.tolist() == expected
        assert mask.tolist() == [[int(t != pad) for t in row] for row in expected]
