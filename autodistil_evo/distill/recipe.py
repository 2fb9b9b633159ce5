"""Training recipes: a YAML file of dataclass fields plus a DeepSpeed JSON config (the shipped one by default).

The YAML says what to train (teacher, space, corpus, schedule); the DeepSpeed JSON says how the
engine optimises (optimizer, scheduler, clipping, ZeRO). Batch-size fields of the JSON are filled
in from the recipe, because DeepSpeed counts every sandwich member as one micro-step.
"""

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from autodistil_evo.distill.loss import EMBEDDING_LOSSES
from autodistil_evo.errors import UserError
from autodistil_evo.fileio import check_mapping, read_yaml, shipped_config
from autodistil_evo.spaces import TeacherShape

TEACHER_SHAPE_FIELDS = [f.name for f in dataclasses.fields(TeacherShape)]


@dataclass
class Recipe:
    teacher: dict  # name + recorded shape (layers, hidden, heads, head_dim, ffn, vocab_size, ...)
    space: str  # a search-space file (beside the recipe, or from the current folder) or a shipped space's name
    deepspeed: str = "deepspeed.json"  # likewise; the default is the shipped DeepSpeed config
    corpus: list = field(default_factory=lambda: ["embedded"])
    name: str = "recipe"
    seq_len: int = 128
    heldout_fraction: float = 0.05
    micro_batch: int = 32
    accumulation: int = 1
    world_size: int = 1  # only for --dry-run plans; a real run takes the launcher's
    steps: int = 1000
    save_every: int = 500
    keep_last: int = 2
    sandwich_random: int = 2
    relation_heads: int = 12
    teacher_layer: int = -1
    # > 0 adds hidden-state distillation (TinyBERT): the weight of the MSE between the student's last
    # hidden state, mapped to the teacher's width by a learned matrix, and the tapped teacher
    # layer's output. 0: relations only (MiniLMv2), and the student's last layer after Q/K/V untrained.
    hidden_weight: float = 0.0
    # > 0 adds the sentence-embedding term (distill/loss.py EmbeddingTerm): on one short text per training block,
    # `sentence_len` tokens with padding, the student's exported embedding against the teacher's, by
    # `embedding_loss` (mse: sentence-transformers' loss on the unit embeddings; similarity: the batch's cosines).
    embedding_weight: float = 0.0
    embedding_loss: str = "mse"
    sentence_len: int = 32
    # the weight of the relation KL (MiniLMv2); 0 with embedding_weight > 0 trains on the embedding alone (the
    # packed blocks are then not run, and the logged relation KL is NaN)
    relation_weight: float = 1.0
    # true: the teacher's heads and FFN neurons are sorted by importance before the SuperLM takes its
    # first-k slices (importance-ordered slicing, distill/rewire.py); false: the teacher's own order.
    rewire: bool = False
    # true: the teacher's hidden channels are sorted by LayerNorm-activation importance (Minitron) before the
    # SuperLM takes its first-k hidden slices, so a narrow subnet keeps the most used channels.
    order_hidden: bool = False
    dropout: float = 0.1
    lr: float = None  # overrides the DeepSpeed optimizer's lr when set
    warmup_steps: int = None  # overrides the scheduler's warmup when set
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast, fp32 weights) | fp16 (DeepSpeed's fp16); the teacher in that dtype
    tf32: bool = True  # TF32 matmuls on CUDA (no effect on CPU)
    source: str = "<memory>"

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @property
    def teacher_name(self) -> str:
        return str(self.teacher.get("name", "embedded:all-MiniLM-L6-v2"))

    @property
    def reaches_last_layer(self) -> bool:
        """A term on the student's last hidden state trains its last layer whole."""
        return bool(self.hidden_weight or self.embedding_weight)

    @property
    def blocks_whole(self) -> bool:
        """The members (and the teacher's tapped layer) run their last layer whole on the training blocks: a
        term on the blocks' hidden state (the embedding term runs on its own sentences)."""
        return bool(self.hidden_weight)

    def teacher_shape(self) -> TeacherShape:
        missing = [k for k in ("layers", "hidden", "heads", "head_dim", "ffn") if k not in self.teacher]
        if missing:
            raise UserError(f"{self.source}: teacher: missing recorded shape field(s) {', '.join(missing)}")
        values = {k: self.teacher[k] for k in TEACHER_SHAPE_FIELDS if k in self.teacher}
        values["name"] = self.teacher_name
        return TeacherShape(**values)

    def locate(self, path: str, kind: str, what: str) -> Path:
        """A file the recipe names: beside the recipe, else from the current folder, else (a bare name) the
        shipped `kind` ("spaces", "recipes") of that name; not found, a line that says where it looked."""
        p = Path(path)
        places = [p] if p.is_absolute() or self.source == "<memory>" else [Path(self.source).parent / p, p]
        for place in places:
            if place.is_file():
                return place
        shipped = shipped_config(p, kind) if p.parent == Path(".") else p
        if shipped.is_file():
            return shipped
        looked = ", ".join(dict.fromkeys(str(place) for place in places))
        if p.parent == Path("."):
            looked += f" and the shipped {kind}"
        raise UserError(f"{self.source}: {what} {path} not found (looked in {looked})")

    def space_file(self) -> Path:
        return self.locate(self.space, "spaces", "space: search-space file")

    def deepspeed_file(self) -> Path:
        return self.locate(self.deepspeed, "recipes", "deepspeed: config file")

    def deepspeed_config(self) -> dict:
        path = self.deepspeed_file()
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: DeepSpeed config is not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise UserError(f"{path}: DeepSpeed config must be a JSON object")
        stage = config.get("zero_optimization", {}).get("stage", 0)
        if stage != 0:
            raise UserError(
                f"{path}: zero_optimization.stage {stage} is not supported: checkpoints here are "
                "safetensors/JSON (never pickle), which needs the unpartitioned optimizer of stage 0"
            )
        return config

    def engine_config(self, sandwich_size: int, total_steps: int) -> dict:
        config = copy.deepcopy(self.deepspeed_config())
        config["train_micro_batch_size_per_gpu"] = self.micro_batch
        config["gradient_accumulation_steps"] = self.accumulation * sandwich_size
        config.pop("train_batch_size", None)
        config.setdefault("steps_per_print", 10**9)
        # The recipe's precision is the one place it is chosen. bf16: torch autocast over fp32 weights, the
        # plain fused torch optimizer (no per-parameter overflow checks, casts or host synchronisations of
        # DeepSpeed's bf16 optimizer); fp16: DeepSpeed's mixed-precision optimizer with dynamic loss scaling.
        for key in ("bf16", "fp16", "torch_autocast"):
            config.pop(key, None)
        if self.precision == "bf16":
            config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
        elif self.precision == "fp16":
            config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                              "hysteresis": 2, "min_loss_scale": 1}
        optimizer = config.setdefault("optimizer", {"type": "AdamW", "params": {}})
        params = optimizer.setdefault("params", {})
        params.setdefault("torch_adam", True)  # no C++ op build
        if params["torch_adam"] and "foreach" not in params:
            # torch's fused AdamW: one kernel over all tensors; on 2 CPU cores its step over the 22M
            # parameters of a BERT-small-sized SuperLM is 10x cheaper than the per-tensor default.
            params.setdefault("fused", True)
        if self.lr is not None:
            params["lr"] = self.lr
        scheduler = config.get("scheduler")
        if scheduler:
            sched = scheduler.setdefault("params", {})
            if scheduler.get("type") in ("WarmupDecayLR", "WarmupCosineLR"):
                sched["total_num_steps"] = max(total_steps, 1)
            if self.lr is not None and "warmup_max_lr" in sched:
                sched["warmup_max_lr"] = self.lr
            if self.warmup_steps is not None:
                sched["warmup_num_steps"] = self.warmup_steps
            if "warmup_num_steps" in sched:
                sched["warmup_num_steps"] = min(sched["warmup_num_steps"], max(total_steps - 1, 1))
        return config

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


PRECISIONS = ("fp32", "bf16", "fp16")
POSITIVE_INTS = ("seq_len", "sentence_len", "micro_batch", "accumulation", "world_size", "save_every", "keep_last", "relation_heads")


def parse_recipe(data, source="<memory>") -> Recipe:
    known = {f.name for f in dataclasses.fields(Recipe)} - {"source"}
    check_mapping(data, source, known, ("teacher", "space"), "a YAML mapping (a recipe)")
    if not isinstance(data["teacher"], dict):
        raise UserError(f"{source}: teacher must be a mapping with name and recorded shape")
    for key in POSITIVE_INTS:
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] <= 0):
            raise UserError(f"{source}: {key}: {data[key]!r} is not a positive integer")
    for key in ("steps", "sandwich_random", "seed"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < 0):
            raise UserError(f"{source}: {key}: {data[key]!r} is not a non-negative integer")
    if "heldout_fraction" in data and not (
        isinstance(data["heldout_fraction"], (int, float)) and 0 < data["heldout_fraction"] < 1
    ):
        raise UserError(f"{source}: heldout_fraction: {data['heldout_fraction']!r} is not in (0, 1)")
    for key in ("hidden_weight", "embedding_weight", "relation_weight"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], (int, float)) or not data[key] >= 0):
            raise UserError(f"{source}: {key}: {data[key]!r} is not a non-negative number")
    if "embedding_loss" in data and data["embedding_loss"] not in EMBEDDING_LOSSES:
        raise UserError(f"{source}: embedding_loss: {data['embedding_loss']!r} is not one of {', '.join(EMBEDDING_LOSSES)}")
    if data.get("sentence_len", 3) < 3:
        raise UserError(f"{source}: sentence_len: {data['sentence_len']} is too short for [CLS], a token and [SEP]")
    if data.get("relation_weight", 1.0) == 0 and not data.get("embedding_weight") and not data.get("hidden_weight"):
        raise UserError(f"{source}: relation_weight: 0 with no other term leaves nothing to train")
    if "precision" in data and data["precision"] not in PRECISIONS:
        raise UserError(f"{source}: precision: {data['precision']!r} is not one of {', '.join(PRECISIONS)}")
    for key in ("tf32", "rewire", "order_hidden"):
        if key in data and not isinstance(data[key], bool):
            raise UserError(f"{source}: {key}: {data[key]!r} is not true or false")
    if "corpus" in data:
        corpus = data["corpus"]
        data = {**data, "corpus": [corpus] if isinstance(corpus, str) else list(corpus)}
    recipe = Recipe(**data, source=str(source))
    recipe.teacher_shape()  # the recorded shape must be complete
    return recipe


def load_recipe(path) -> Recipe:
    """A recipe file, or a shipped recipe's name (`quickstart`, `bench`, `paper-bert-base`)."""
    path = shipped_config(path, "recipes")
    return parse_recipe(read_yaml(path, "recipe file"), source=str(path))
