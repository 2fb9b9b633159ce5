"""Search-space YAML: schema, validation against a teacher; the arch, its id, JSON form and genome.

A space file looks like::

    name: minilm-l6
    head_dim: 32            # or `teacher`: take the teacher's head size
    seq_len: 128            # sequence length FLOPs are counted at
    subspaces:
      tiny: {layers: [2, 3], heads: [7, 8], hidden: [64, 96], mlp_ratio: [2, 3]}
      wide: {layers: [2, 3], heads: [7, 8], hidden: [64, 96], mlp_ratio: [2, 3], per_layer: [heads, mlp_ratio]}

Q/K/V width is `heads x head_dim`, independent of `hidden` (as in AutoDistil); the FFN size
is `round(hidden x mlp_ratio)`. A sub-space with `per_layer` lets every layer of a student pick
its own value of those genes; `layers` and `hidden` (the residual width) stay one per student.

Which of the SuperLM's layers a student of depth d runs: evenly strided ones by default
(floor(i * L / d)); a sub-space with `layer_choice: subset` lets each student keep any d of them
(`Arch.layer_ids`, searched as one keep-bit per layer), as a user who drops a teacher's layers by
hand chooses which. Its SuperLM has `superlm_layers` layers (default: max(layers)); with the
teacher's depth there, they are the teacher's own.

This module is the one home of the arch: other modules build, render and pass `Arch` objects
and genomes through the methods here rather than naming its fields.
"""

import itertools
import math
from dataclasses import dataclass, field, replace

from autodistil_evo.errors import UserError
from autodistil_evo.fileio import check_mapping, read_yaml, shipped_config

GENES = ("layers", "heads", "hidden", "mlp_ratio")
PER_LAYER_GENES = ("heads", "mlp_ratio")
SUBSPACE_KEYS = (*GENES, "per_layer", "layer_choice", "superlm_layers")
LAYER_CHOICES = ("stride", "subset")
TOP_LEVEL_KEYS = {"name", "head_dim", "seq_len", "vocab_size", "max_position_embeddings", "type_vocab_size", "subspaces"}
# BERT's defaults, so `space stats` needs no teacher.
BERT_VOCAB, BERT_POSITIONS, BERT_TOKEN_TYPES = 30522, 512, 2


def stride_layers(depth: int, total: int) -> list:
    """Indices of `total` layers a `depth`-layer network uses: floor(i * total / depth)."""
    return [(i * total) // depth for i in range(depth)]


def _per_layer_value(value, cast, layers: int, gene: str):
    """One value for every layer (scalar) or a tuple of `layers` values; an all-equal list is the scalar."""
    if isinstance(value, (list, tuple)):
        if len(value) != layers:
            raise ValueError(f"{gene}: {len(value)} values for {layers} layers")
        values = tuple(cast(v) for v in value)
        return values[0] if len(set(values)) == 1 else values
    return cast(value)


@dataclass(frozen=True)
class Arch:
    """A student's shape. `heads` / `mlp_ratio`: one value for all layers, or a tuple per layer.

    A per-layer tuple whose values are all equal is stored as that scalar, so a uniform arch
    written with lists is the same arch (same key, cache entry and export) as its scalar form.
    """

    layers: int
    heads: object  # int, or tuple of `layers` ints
    hidden: int
    mlp_ratio: object  # float, or tuple of `layers` floats
    layer_ids: tuple | None = None  # the SuperLM layers it runs, ascending; None: evenly strided

    def __post_init__(self):
        object.__setattr__(self, "layers", int(self.layers))
        if self.layer_ids is not None:
            ids = tuple(int(i) for i in self.layer_ids)
            if len(ids) != self.layers:
                raise ValueError(f"layer_ids: {len(ids)} layers listed for a depth of {self.layers}")
            if any(i < 0 for i in ids) or any(a >= b for a, b in zip(ids, ids[1:])):
                raise ValueError(f"layer_ids: {list(ids)} is not an ascending list of distinct layer indices")
            object.__setattr__(self, "layer_ids", ids)
        object.__setattr__(self, "hidden", int(self.hidden))
        object.__setattr__(self, "heads", _per_layer_value(self.heads, int, self.layers, "heads"))
        object.__setattr__(self, "mlp_ratio", _per_layer_value(self.mlp_ratio, float, self.layers, "mlp_ratio"))

    @property
    def uniform(self) -> bool:
        return not isinstance(self.heads, tuple) and not isinstance(self.mlp_ratio, tuple)

    def _per_layer(self, value) -> tuple:
        return value if isinstance(value, tuple) else (value,) * self.layers

    @property
    def layer_heads(self) -> tuple:
        return self._per_layer(self.heads)

    @property
    def layer_ratios(self) -> tuple:
        return self._per_layer(self.mlp_ratio)

    @property
    def layer_ffn(self) -> tuple:
        return tuple(int(round(self.hidden * r)) for r in self.layer_ratios)

    @property
    def ffn(self):
        """FFN size: an int, or a list per layer where `mlp_ratio` is per layer (as in the JSON form)."""
        sizes = self.layer_ffn
        return sizes[0] if not isinstance(self.mlp_ratio, tuple) else list(sizes)

    def to_dict(self) -> dict:
        """The arch JSON: scalars where uniform, lists of `layers` values where per layer."""
        def plain(v):
            return list(v) if isinstance(v, tuple) else v

        d = {"layers": self.layers, "heads": plain(self.heads), "hidden": self.hidden, "mlp_ratio": plain(self.mlp_ratio)}
        return d | ({"layer_ids": list(self.layer_ids)} if self.layer_ids is not None else {})

    def strided(self) -> "Arch":
        """The same shape on evenly strided layers (a SuperLM built for it alone has exactly its layers)."""
        return replace(self, layer_ids=None)

    @classmethod
    def from_dict(cls, d: dict, where="arch") -> "Arch":
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a JSON object with {', '.join(GENES)}")
        missing = [g for g in GENES if g not in d]
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
        for gene in ("layers", "hidden"):
            if isinstance(d[gene], (list, tuple, bool)):
                raise UserError(f"{where}.{gene}: one value per student, got {d[gene]!r}")
        layer_ids = d.get("layer_ids")
        if layer_ids is not None and (not isinstance(layer_ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                                              for i in layer_ids)):
            raise UserError(f"{where}.layer_ids: a list of layer indices, got {layer_ids!r}")
        try:
            return cls(int(d["layers"]), d["heads"], int(d["hidden"]), d["mlp_ratio"], layer_ids)
        except (TypeError, ValueError) as e:
            field_name = str(e).split(":")[0] if str(e).split(":")[0] in (*GENES, "layer_ids") else None
            raise UserError(f"{where}.{field_name}: {str(e).split(': ', 1)[1]}" if field_name else f"{where}: {e}") from None

    def key(self) -> str:
        """Readable, stable id: `L4-H8-D176-R2.5` (uniform), `L4-D176-H8_8_10_6-R2.5_3_3_2` (per layer).

        Per-layer values are joined by `_`, not `.`, so a ratio's decimal point is never mistaken
        for a layer boundary (`2.5.3` could be 2.5, 3 or 2, 5.3).
        """
        depth = f"L{self.layers}" + ("@" + "_".join(map(str, self.layer_ids)) if self.layer_ids is not None else "")
        if self.uniform:
            return f"{depth}-H{self.heads}-D{self.hidden}-R{self.mlp_ratio:g}"
        heads = "_".join(str(h) for h in self.layer_heads) if isinstance(self.heads, tuple) else str(self.heads)
        ratios = "_".join(f"{r:g}" for r in self.layer_ratios) if isinstance(self.mlp_ratio, tuple) else f"{self.mlp_ratio:g}"
        return f"{depth}-D{self.hidden}-H{heads}-R{ratios}"


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
    type_vocab_size: int = BERT_TOKEN_TYPES  # 0: no token types (DistilBERT)
    family: str = "bert"  # the teacher's model_type (spaces.families)
    embedding_size: int = 0  # ELECTRA's factorised embeddings; 0: embeddings are hidden-wide

    @classmethod
    def from_config(cls, name, config) -> "TeacherShape":
        from autodistil_evo.spaces.families import family

        own = family(getattr(config, "model_type", "bert"), f"teacher {name}")
        embedding_size = getattr(config, "embedding_size", config.hidden_size) if own.factorized_embeddings else config.hidden_size
        return cls(
            name=str(name),
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=config.num_attention_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            ffn=getattr(config, "intermediate_size", None) or config.hidden_dim,  # DistilBERT: hidden_dim
            vocab_size=config.vocab_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size if own.token_types else 0,
            family=own.model_type,
            embedding_size=0 if embedding_size == config.hidden_size else embedding_size,
        )

    def arch(self) -> "Arch":
        return Arch(self.layers, self.heads, self.hidden, self.ffn / self.hidden)

    def dims(self) -> "ModelDims":
        return ModelDims(self.head_dim, self.vocab_size, self.max_position_embeddings, self.type_vocab_size,
                         self.family, self.embedding_size)


@dataclass(frozen=True)
class ModelDims:
    """The parts of a student's shape that a search space does not vary."""

    head_dim: int
    vocab_size: int = BERT_VOCAB
    max_position_embeddings: int = BERT_POSITIONS
    type_vocab_size: int = BERT_TOKEN_TYPES
    family: str = "bert"
    embedding_size: int = 0


@dataclass
class SubSpace:
    name: str
    layers: list
    heads: list
    hidden: list
    mlp_ratio: list
    per_layer: tuple = ()  # genes each layer chooses for itself (subset of PER_LAYER_GENES)
    layer_choice: str = "stride"  # which SuperLM layers a student runs: evenly strided, or any `subset`
    superlm_layers: int | None = None  # `subset`: the SuperLM's depth, students choose from (None: max(layers))

    @classmethod
    def of_arch(cls, name: str, arch: Arch) -> "SubSpace":
        """The smallest sub-space holding `arch.strided()`: its SuperLM has exactly the arch's layers, hidden
        width and largest per-layer heads / FFN, so the arch is the one subnet that uses every layer."""
        per_layer = tuple(g for g in PER_LAYER_GENES if isinstance(getattr(arch, g), tuple))
        return cls(name, [arch.layers], sorted(set(arch.layer_heads)), [arch.hidden], sorted(set(arch.layer_ratios)),
                   per_layer)

    @property
    def depth(self) -> int:
        """The SuperLM's depth: `superlm_layers`, else the largest student's."""
        return self.superlm_layers or max(self.layers)

    @property
    def subsets(self) -> bool:
        return self.layer_choice == "subset"

    def _kept(self, layers: int) -> tuple | None:
        """A student's layers as this sub-space names them: evenly strided indices where students choose
        subsets (so equal students have equal archs), None where the stride is implied."""
        return tuple(stride_layers(layers, self.depth)) if self.subsets else None

    def choices(self, gene: str) -> list:
        return getattr(self, gene)

    def _slots(self, gene: str, layers: int) -> int:
        """How many values of `gene` a student of `layers` layers chooses."""
        return layers if gene in self.per_layer else 1

    def candidate_count(self) -> int:
        """Exact number of distinct archs: a Python int, since per-layer spaces easily exceed what
        `len()` may return (a 24-layer space with 4 choices per gene holds 4^48 per depth)."""
        return sum(
            (math.comb(self.depth, depth) if self.subsets else 1)
            * len(self.hidden) * math.prod(len(self.choices(g)) ** self._slots(g, depth) for g in PER_LAYER_GENES)
            for depth in self.layers
        )

    def _layer_sets(self, depth: int):
        return itertools.combinations(range(self.depth), depth) if self.subsets else [None]

    def candidates(self):
        """Every arch, lazily, in genome order (uniform sub-spaces: layers, heads, hidden, mlp_ratio)."""
        if not self.per_layer and not self.subsets:
            for combo in itertools.product(self.layers, self.heads, self.hidden, self.mlp_ratio):
                yield Arch(*combo)
            return
        for depth in self.layers:
            for kept in self._layer_sets(depth):
                for hidden in self.hidden:
                    heads = itertools.product(self.heads, repeat=self._slots("heads", depth))
                    for h in heads:
                        for r in itertools.product(self.mlp_ratio, repeat=self._slots("mlp_ratio", depth)):
                            yield Arch(depth, h if len(h) > 1 else h[0], hidden, r if len(r) > 1 else r[0], kept)

    def largest(self) -> Arch:
        depth = max(self.layers)
        return Arch(depth, max(self.heads), max(self.hidden), max(self.mlp_ratio), self._kept(depth))

    def smallest(self) -> Arch:
        depth = min(self.layers)
        return Arch(depth, min(self.heads), min(self.hidden), min(self.mlp_ratio), self._kept(depth))

    def max_ffn(self) -> int:
        return max(Arch(1, 1, h, r).ffn for h in self.hidden for r in self.mlp_ratio)

    def check(self, arch: Arch, where: str = "arch"):
        """Raise a UserError naming the field where `arch` leaves this sub-space."""
        for gene in ("layers", "hidden"):
            if getattr(arch, gene) not in self.choices(gene):
                raise UserError(f"{where}.{gene}: {getattr(arch, gene)} is not among sub-space '{self.name}' choices {self.choices(gene)}")
        if arch.layer_ids is not None:
            if not self.subsets:
                raise UserError(f"{where}.layer_ids: sub-space '{self.name}' runs evenly strided layers (layer_choice: "
                                "stride); leave layer_ids out")
            if arch.layer_ids[-1] >= self.depth:
                raise UserError(f"{where}.layer_ids: layer {arch.layer_ids[-1]} is past the {self.depth} layers of "
                                f"sub-space '{self.name}' (indices 0-{self.depth - 1})")
        for gene in PER_LAYER_GENES:
            value = getattr(arch, gene)
            if isinstance(value, tuple) and gene not in self.per_layer:
                raise UserError(
                    f"{where}.{gene}: layers differ ({list(value)}) but sub-space '{self.name}' has no per-layer "
                    f"{gene} (per_layer: {list(self.per_layer)}); give one value"
                )
            for i, v in enumerate(value if isinstance(value, tuple) else (value,)):
                if v not in self.choices(gene):
                    at = f"[{i}]" if isinstance(value, tuple) else ""
                    raise UserError(f"{where}.{gene}{at}: {v:g} is not among sub-space '{self.name}' choices {self.choices(gene)}")

    def contains(self, arch: Arch) -> bool:
        try:
            self.check(arch)
        except UserError:
            return False
        return True

    def sample(self, rng) -> Arch:
        """A random arch drawn gene by gene (depth uniform, then each layer's values) from a numpy Generator."""
        def draw(gene, n=None):
            options = self.choices(gene)
            if n is None:
                return options[rng.integers(len(options))]
            return tuple(options[i] for i in rng.integers(len(options), size=n))

        layers = draw("layers")
        heads = draw("heads", layers if "heads" in self.per_layer else None)
        hidden = draw("hidden")
        ratio = draw("mlp_ratio", layers if "mlp_ratio" in self.per_layer else None)
        kept = tuple(sorted(rng.choice(self.depth, size=layers, replace=False).tolist())) if self.subsets else None
        return Arch(layers, heads, hidden, ratio, kept)

    # ----- genome: integer indices into the choices. Uniform sub-spaces keep [layers, heads, hidden,
    # mlp_ratio]; per-layer ones are [layers, hidden, h_1..h_Lmax, r_1..r_Lmax] (a gene that is not
    # per layer takes one slot). Genes past a genome's depth are inactive. With `layer_choice: subset`
    # the depth gene is one keep-bit per SuperLM layer instead (the depth is how many are kept).

    def _genome_layout(self) -> list:
        depth = [("keep", i) for i in range(self.depth)] if self.subsets else [("layers", 0)]
        if not self.per_layer:
            return depth + [(g, 0) for g in GENES if g != "layers"]
        return depth + [("hidden", 0)] + [
            (g, i) for g in PER_LAYER_GENES for i in range(max(self.layers) if g in self.per_layer else 1)
        ]

    def genome_sizes(self) -> list:
        return [2 if g == "keep" else len(self.choices(g)) for g, _ in self._genome_layout()]

    def _repair(self, kept: list) -> tuple:
        """Keep-bits whose count is not an allowed depth, made one: the nearest allowed depth (the smaller on a
        tie), reached by dropping the last kept layers or adding the first missing ones."""
        want = min(self.layers, key=lambda d: (abs(d - len(kept)), d))
        missing = [i for i in range(self.depth) if i not in kept]
        return tuple(sorted(kept[:want] + missing[: max(want - len(kept), 0)]))

    def decode(self, x) -> Arch:
        values = {}
        for (gene, _), v in zip(self._genome_layout(), x):
            index = int(round(float(v)))
            values.setdefault(gene, []).append(index if gene == "keep" else self.choices(gene)[index])
        kept = self._repair([i for i, bit in enumerate(values["keep"]) if bit]) if self.subsets else None
        layers = len(kept) if self.subsets else values["layers"][0]
        per = {g: (tuple(values[g][:layers]) if g in self.per_layer else values[g][0]) for g in PER_LAYER_GENES}
        return Arch(layers, per["heads"], values["hidden"][0], per["mlp_ratio"], kept)

    def encode(self, arch: Arch) -> list:
        """The canonical genome of `arch`: inactive genes are 0, so equal archs have equal genomes."""
        kept = arch.layer_ids if arch.layer_ids is not None else self._kept(arch.layers)
        out = []
        for gene, slot in self._genome_layout():
            if gene == "keep":
                out.append(int(slot in kept))
            elif gene in PER_LAYER_GENES:
                values = getattr(arch, "layer_heads" if gene == "heads" else "layer_ratios")
                out.append(self.choices(gene).index(values[slot]) if slot < arch.layers else 0)
            else:
                out.append(self.choices(gene).index(getattr(arch, gene)))
        return out


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
            family=teacher.family if teacher is not None else "bert",
            embedding_size=teacher.embedding_size if teacher is not None else 0,
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
            if sub.depth > teacher.layers:
                raise UserError(f"{field_of}.superlm_layers: {sub.depth} > teacher's {teacher.layers} layers")
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
            s.name: {g: list(s.choices(g)) for g in GENES} | ({"per_layer": list(s.per_layer)} if s.per_layer else {})
            | ({"layer_choice": s.layer_choice} if s.subsets else {})
            | ({"superlm_layers": s.superlm_layers} if s.superlm_layers else {})
            for s in self.subspaces.values()
        }
        return d

    def sha256(self) -> str:
        """A content hash of the space's definition (`to_dict`), the same wherever its file lies."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


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


def _parse_per_layer(genes, lists, where) -> tuple:
    genes = genes if isinstance(genes, list) else [genes]
    for gene in genes:
        if gene not in PER_LAYER_GENES:
            raise UserError(f"{where}.per_layer: unknown gene {gene!r} (per-layer genes: {', '.join(PER_LAYER_GENES)})")
        if len(lists[gene]) < 2:
            raise UserError(f"{where}.per_layer: '{gene}' has one choice, so there is nothing to choose per layer")
    if len(set(genes)) != len(genes):
        raise UserError(f"{where}.per_layer: a gene is listed twice")
    return tuple(g for g in PER_LAYER_GENES if g in genes)  # one canonical order


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
        check_mapping(spec, where, SUBSPACE_KEYS, (), f"a mapping with keys {', '.join(GENES)} (and optionally per_layer)")
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
        layer_choice = spec.get("layer_choice", "stride")
        if layer_choice not in LAYER_CHOICES:
            raise UserError(f"{where}.layer_choice: {layer_choice!r} is not one of {', '.join(LAYER_CHOICES)}")
        superlm_layers = spec.get("superlm_layers")
        if superlm_layers is not None:
            _positive_ints([superlm_layers], f"{where}.superlm_layers")
            if layer_choice != "subset":
                raise UserError(f"{where}.superlm_layers: only with layer_choice: subset (students of a strided "
                                "sub-space run evenly spread layers of a SuperLM as deep as the deepest of them)")
            if superlm_layers < max(lists["layers"]):
                raise UserError(f"{where}.superlm_layers: {superlm_layers} is fewer than the deepest student's "
                                f"{max(lists['layers'])} layers")
        subspaces[str(name)] = SubSpace(name=str(name), **lists, per_layer=_parse_per_layer(spec.get("per_layer", []), lists, where),
                                        layer_choice=layer_choice, superlm_layers=superlm_layers)
    return SearchSpace(
        name=str(data["name"]), head_dim=head_dim, seq_len=seq_len, subspaces=subspaces, source=str(source), **extras
    )


def load_space(path) -> SearchSpace:
    """A search-space file, or a shipped space's name (`minilm-l6`, `autodistil-bert-base`, ...)."""
    path = shipped_config(path, "spaces")
    return parse_space(read_yaml(path, "search-space file"), source=str(path))
