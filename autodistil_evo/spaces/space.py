"""Search-space YAML: schema, validation against a teacher, candidate enumeration.

A space file looks like::

    name: minilm-l6
    head_dim: 32            # or `teacher`: take the teacher's head size
    seq_len: 128            # sequence length FLOPs are counted at
    subspaces:
      tiny: {layers: [2, 3], heads: [7, 8], hidden: [64, 96], mlp_ratio: [2, 3]}

Q/K/V width is `heads x head_dim`, independent of `hidden` (as in AutoDistil); the FFN size
is `round(hidden x mlp_ratio)`.
"""

import itertools
from dataclasses import asdict, dataclass, field

from autodistil_evo.errors import UserError
from autodistil_evo.fileio import check_mapping, read_yaml

GENES = ("layers", "heads", "hidden", "mlp_ratio")
TOP_LEVEL_KEYS = {"name", "head_dim", "seq_len", "vocab_size", "max_position_embeddings", "type_vocab_size", "subspaces"}
# BERT's defaults, so `space stats` needs no teacher.
BERT_VOCAB, BERT_POSITIONS, BERT_TOKEN_TYPES = 30522, 512, 2


@dataclass(frozen=True, order=True)
class Arch:
    layers: int
    heads: int
    hidden: int
    mlp_ratio: float

    @property
    def ffn(self) -> int:
        return int(round(self.hidden * self.mlp_ratio))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where="arch") -> "Arch":
        missing = [g for g in GENES if g not in d]
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            return cls(int(d["layers"]), int(d["heads"]), int(d["hidden"]), float(d["mlp_ratio"]))
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {e}") from None

    def key(self) -> str:
        return f"L{self.layers}-H{self.heads}-D{self.hidden}-R{self.mlp_ratio:g}"


@dataclass(frozen=True)
class TeacherShape:
    """What a space is validated against; recipes record it so no weights are needed to check."""

    name: str
    layers: int
    hidden: int
    heads: int
    head_dim: int
    ffn: int
    vocab_size: int = BERT_VOCAB
    max_position_embeddings: int = BERT_POSITIONS
    type_vocab_size: int = BERT_TOKEN_TYPES

    @classmethod
    def from_config(cls, name, config) -> "TeacherShape":
        return cls(
            name=str(name),
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=config.num_attention_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            ffn=config.intermediate_size,
            vocab_size=config.vocab_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
        )

    def arch(self) -> "Arch":
        return Arch(self.layers, self.heads, self.hidden, self.ffn / self.hidden)

    def dims(self) -> "ModelDims":
        return ModelDims(self.head_dim, self.vocab_size, self.max_position_embeddings, self.type_vocab_size)


@dataclass(frozen=True)
class ModelDims:
    """The parts of a student's shape that a search space does not vary."""

    head_dim: int
    vocab_size: int = BERT_VOCAB
    max_position_embeddings: int = BERT_POSITIONS
    type_vocab_size: int = BERT_TOKEN_TYPES


@dataclass
class SubSpace:
    name: str
    layers: list
    heads: list
    hidden: list
    mlp_ratio: list

    def choices(self, gene: str) -> list:
        return getattr(self, gene)

    def candidates(self) -> list:
        return [Arch(*combo) for combo in itertools.product(self.layers, self.heads, self.hidden, self.mlp_ratio)]

    def __len__(self):
        return len(self.layers) * len(self.heads) * len(self.hidden) * len(self.mlp_ratio)

    def largest(self) -> Arch:
        return Arch(max(self.layers), max(self.heads), max(self.hidden), max(self.mlp_ratio))

    def smallest(self) -> Arch:
        return Arch(min(self.layers), min(self.heads), min(self.hidden), min(self.mlp_ratio))

    def max_ffn(self) -> int:
        return max(Arch(1, 1, h, r).ffn for h in self.hidden for r in self.mlp_ratio)

    def contains(self, arch: Arch) -> bool:
        return all(getattr(arch, g) in self.choices(g) for g in GENES)


@dataclass
class SearchSpace:
    name: str
    head_dim: object  # int, or "teacher" until resolved against a teacher
    seq_len: int
    subspaces: dict = field(default_factory=dict)
    vocab_size: int = None
    max_position_embeddings: int = None
    type_vocab_size: int = None
    source: str = "<memory>"

    def subspace(self, name: str) -> SubSpace:
        if name not in self.subspaces:
            raise UserError(f"{self.source}: no sub-space '{name}' (has: {', '.join(self.subspaces)})")
        return self.subspaces[name]

    def select(self, name: str) -> list:
        """`all` or one sub-space name -> list of SubSpace."""
        return list(self.subspaces.values()) if name == "all" else [self.subspace(name)]

    def dims(self, teacher: TeacherShape = None) -> ModelDims:
        head_dim = self.head_dim
        if head_dim == "teacher":
            if teacher is None:
                raise UserError(f"{self.source}: head_dim is 'teacher'; pass --teacher to resolve it")
            head_dim = teacher.head_dim

        def pick(own, teacher_value, default):
            if own is not None:
                return own
            return teacher_value if teacher is not None else default

        return ModelDims(
            head_dim=int(head_dim),
            vocab_size=pick(self.vocab_size, teacher and teacher.vocab_size, BERT_VOCAB),
            max_position_embeddings=pick(
                self.max_position_embeddings, teacher and teacher.max_position_embeddings, BERT_POSITIONS
            ),
            type_vocab_size=pick(self.type_vocab_size, teacher and teacher.type_vocab_size, BERT_TOKEN_TYPES),
        )

    def validate_against(self, teacher: TeacherShape):
        """Every choice must be initialisable from this teacher's weights (first-k slicing)."""
        dims = self.dims(teacher)
        where = f"{self.source} vs teacher {teacher.name}"
        if dims.vocab_size != teacher.vocab_size:
            raise UserError(f"{where}: vocab_size {dims.vocab_size} != teacher vocab {teacher.vocab_size}")
        for sub in self.subspaces.values():
            field_of = f"{where}: subspaces.{sub.name}"
            if max(sub.layers) > teacher.layers:
                raise UserError(f"{field_of}.layers: {max(sub.layers)} > teacher's {teacher.layers} layers")
            width = max(sub.heads) * dims.head_dim
            if width > teacher.heads * teacher.head_dim:
                raise UserError(
                    f"{field_of}.heads: {max(sub.heads)} heads x head_dim {dims.head_dim} = {width} "
                    f"> teacher's Q/K/V width {teacher.heads * teacher.head_dim}"
                )
            if max(sub.hidden) > teacher.hidden:
                raise UserError(f"{field_of}.hidden: {max(sub.hidden)} > teacher's hidden {teacher.hidden}")
            if sub.max_ffn() > teacher.ffn:
                raise UserError(
                    f"{field_of}.mlp_ratio: FFN size {sub.max_ffn()} > teacher's FFN {teacher.ffn}"
                )

    def to_dict(self) -> dict:
        d = {"name": self.name, "head_dim": self.head_dim, "seq_len": self.seq_len}
        for key in ("vocab_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["subspaces"] = {
            s.name: {g: list(s.choices(g)) for g in GENES} for s in self.subspaces.values()
        }
        return d


def _positive_ints(values, where):
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise UserError(f"{where}: {v!r} is not a positive integer")
        out.append(v)
    return out


def _positive_numbers(values, where):
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise UserError(f"{where}: {v!r} is not a positive number")
        out.append(float(v))
    return out


def parse_space(data, source="<memory>") -> SearchSpace:
    check_mapping(data, source, TOP_LEVEL_KEYS, ("name", "head_dim", "subspaces"), "a YAML mapping (a search space)")
    head_dim = data["head_dim"]
    if head_dim != "teacher":
        _positive_ints([head_dim], f"{source}: head_dim (an integer or 'teacher')")
    seq_len = data.get("seq_len", 128)
    _positive_ints([seq_len], f"{source}: seq_len")
    extras = {}
    for key in ("vocab_size", "max_position_embeddings", "type_vocab_size"):
        if key in data:
            extras[key] = _positive_ints([data[key]], f"{source}: {key}")[0]
    subs = data["subspaces"]
    if not isinstance(subs, dict) or not subs:
        raise UserError(f"{source}: subspaces must be a non-empty mapping of name -> choices")
    subspaces = {}
    for name, spec in subs.items():
        where = f"{source}: subspaces.{name}"
        if name == "all":
            raise UserError(f"{where}: 'all' is reserved (it means every sub-space)")
        check_mapping(spec, where, GENES, (), f"a mapping with keys {', '.join(GENES)}")
        lists = {}
        for gene in GENES:
            values = spec.get(gene)
            if values is None:
                raise UserError(f"{where}.{gene}: missing")
            if not isinstance(values, list):
                values = [values]
            if not values:
                raise UserError(f"{where}.{gene}: empty choice list")
            check = _positive_numbers if gene == "mlp_ratio" else _positive_ints
            lists[gene] = sorted(set(check(values, f"{where}.{gene}")))
        subspaces[str(name)] = SubSpace(name=str(name), **lists)
    return SearchSpace(
        name=str(data["name"]), head_dim=head_dim, seq_len=seq_len, subspaces=subspaces, source=str(source), **extras
    )


def load_space(path) -> SearchSpace:
    return parse_space(read_yaml(path, "search-space file"), source=str(path))
