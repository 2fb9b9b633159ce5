"""The SuperLM: a weight-sharing BERT encoder whose every sub-network is one student.

In the style of once-for-all's elastic modules: each module is an ordinary torch module built
at the sub-space's largest shape; `SuperLM.set_active(arch)` chooses a subnet and the forward
pass computes only that subnet's slice of every weight (first-k slicing: the first `hidden`
channels, the first `heads` heads, the first `ffn` FFN units, each chosen per layer where the
arch is per layer), so its cost tracks the subnet's FLOPs. `SuperLM.extract(arch)` returns a standalone student holding copies of those slices.

Depth: the SuperLM has L layers; a subnet of depth d uses SuperLM layers floor(i*L/d) for
i < d (uniform stride, as AutoDistil's reference implementation), or the ones its arch lists
(`Arch.layer_ids`, in a sub-space with `layer_choice: subset`). The SuperLM's own layers are
taken from the teacher's by the stride rule when it is initialised from a teacher.
"""

import contextlib

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel

from autodistil_evo.spaces import FAMILIES, Arch, ModelDims, SubSpace
from autodistil_evo.spaces.space import stride_layers
from autodistil_evo.supernet.modeling_student import (
    StudentConfig,
    StudentModel,
    extended_attention_mask,
    multi_head_attention,
    position_ids,
)
from autodistil_evo.supernet.sliced import (
    LowPrecisionCopies,
    leading,
    sliced_embedding,
    sliced_layer_norm,
    sliced_linear,
    sliced_linears,
)


def arch_layers(arch: Arch, total: int) -> list:
    """Indices of the `total` SuperLM layers `arch` runs, in order: its `layer_ids`, else evenly strided."""
    return list(arch.layer_ids) if arch.layer_ids is not None else stride_layers(arch.layers, total)


def student_config(arch: Arch, dims: ModelDims, layer_norm_eps=1e-12, dropout=0.1, attention_dropout=None, pad_token_id=0):
    """Config of a standalone student: the teacher family's own config (BertConfig, RobertaConfig,
    ...) where that class can express it (uniform, Q/K/V width == hidden, ELECTRA's projection
    present), else a StudentConfig carrying the family's conventions, whose heads and FFN size are
    lists where they vary by layer."""
    import transformers

    own = FAMILIES[dims.family]
    attention_dropout = dropout if attention_dropout is None else attention_dropout
    common = dict(
        vocab_size=dims.vocab_size,
        hidden_size=arch.hidden,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.to_dict()["heads"],
        intermediate_size=arch.ffn,
        hidden_act="gelu",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=attention_dropout,
        max_position_embeddings=dims.max_position_embeddings,
        type_vocab_size=dims.type_vocab_size,
        layer_norm_eps=layer_norm_eps,
        pad_token_id=pad_token_id,
    )
    expressible = arch.uniform and arch.heads * dims.head_dim == arch.hidden and dims.embedding_size != arch.hidden
    if expressible:
        config_class = getattr(transformers, own.config_class)
        if own.model_type == "distilbert":
            config = config_class(vocab_size=dims.vocab_size, max_position_embeddings=dims.max_position_embeddings,
                                  sinusoidal_pos_embds=False, n_layers=arch.layers, n_heads=arch.heads, dim=arch.hidden,
                                  hidden_dim=arch.ffn, dropout=dropout, attention_dropout=attention_dropout,
                                  activation="gelu", pad_token_id=pad_token_id)
        elif own.factorized_embeddings:
            config = config_class(embedding_size=dims.embedding_size or arch.hidden, **common)
        else:
            config = config_class(**common)
        config._attn_implementation = "sdpa"
        return config
    return StudentConfig(head_dim=dims.head_dim, roberta_positions=own.roberta_positions,
                         embedding_size=dims.embedding_size or None, use_pooler=own.pooler, **common)


def build_student(config) -> nn.Module:
    return StudentModel(config) if isinstance(config, StudentConfig) else AutoModel.from_config(config)


class ElasticLinear(nn.Linear):
    """nn.Linear whose input width follows the input and whose output width is chosen per call (its weight
    gradient goes into the slice it used: `supernet.sliced`). `low_precision`: the step's (weight, bias) copies
    in the autocast dtype, while `SuperLM.low_precision_weights` is active."""

    low_precision = None

    def forward(self, x, out_features=None):
        return sliced_linear(x, self.weight, self.bias, out_features or self.out_features, self.low_precision)


class ElasticLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return sliced_layer_norm(x, self.weight, self.bias, self.eps)


class ElasticEmbeddings(nn.Module):
    """Token, position and token-type tables in the teacher family's conventions. Hidden-wide
    embeddings are sliced to the active hidden size; ELECTRA's factorised ones keep their width
    and `SuperLM.embeddings_project` slices its output rows instead."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.padding_idx, self.roberta_positions = config.pad_token_id, config.roberta_positions
        self.factorised = bool(config.embedding_size)
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.LayerNorm = ElasticLayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, hidden):
        # Look up full rows and slice the result (slicing the tables would copy them every step); the gradient goes
        # into the looked-up rows' slices only.
        width = self.word_embeddings.embedding_dim if self.factorised else hidden
        embeddings = sliced_embedding(input_ids, self.word_embeddings.weight, width, self.padding_idx)
        if self.token_type_embeddings is not None:
            embeddings = embeddings + sliced_embedding(token_type_ids, self.token_type_embeddings.weight, width)
        positions = position_ids(input_ids, self.padding_idx, self.roberta_positions)
        embeddings = embeddings + sliced_embedding(positions, self.position_embeddings.weight, width)
        return self.dropout(self.LayerNorm(embeddings))


class ElasticSelfAttention(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        width = config.num_attention_heads * config.head_dim
        self.query = ElasticLinear(config.hidden_size, width)
        self.key = ElasticLinear(config.hidden_size, width)
        self.value = ElasticLinear(config.hidden_size, width)


class ElasticOutput(nn.Module):
    """dense -> dropout -> residual -> LayerNorm, with the output width given per call."""

    def __init__(self, config: StudentConfig, in_features):
        super().__init__()
        self.dense = ElasticLinear(in_features, config.hidden_size)
        self.LayerNorm = ElasticLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states, residual.shape[-1])) + residual)


class ElasticAttention(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.self = ElasticSelfAttention(config)
        self.output = ElasticOutput(config, config.num_attention_heads * config.head_dim)


class ElasticIntermediate(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.dense = ElasticLinear(config.hidden_size, config.intermediate_size)


class ElasticLayer(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.attention = ElasticAttention(config)
        self.intermediate = ElasticIntermediate(config)
        self.output = ElasticOutput(config, config.intermediate_size)

    def qkv(self, hidden_states, width):
        """Q, K and V, computed as one product of the three weights' slices."""
        linears = (self.attention.self.query, self.attention.self.key, self.attention.self.value)
        return sliced_linears(hidden_states, [(m.weight, m.bias) for m in linears], width, [m.low_precision for m in linears])

    def forward(self, hidden_states, additive_mask, width, ffn, qkv=None):
        q, k, v = qkv if qkv is not None else self.qkv(hidden_states, width)
        config = self.config
        dropout = config.attention_probs_dropout_prob
        context = multi_head_attention(q, k, v, additive_mask, config.head_dim, dropout, self.training)
        hidden_states = self.attention.output(context, hidden_states)
        intermediate = F.gelu(self.intermediate.dense(hidden_states, ffn))
        return self.output(intermediate, hidden_states)


class SuperLM(nn.Module):
    """Weight-sharing BERT encoder over one sub-space; `set_active` picks the subnet to run."""

    def __init__(self, subspace: SubSpace, dims: ModelDims, layer_norm_eps=1e-12, dropout=0.1, pad_token_id=0,
                 distill_width: int | None = None, trains_last_layer: bool = False):
        """`distill_width`: the teacher's hidden size, when training adds hidden-state distillation; the
        SuperLM then holds `distill_head`, the learned map from a subnet's hidden state to the teacher's
        width. A training aid, as an optimizer's state is: no student and no saved SuperLM carries it.
        `trains_last_layer`: training has a term on the subnets' last hidden state (`distill_width` implies it)."""
        super().__init__()
        largest = subspace.largest()
        self.subspace = subspace
        self.dims = dims
        self.config = StudentConfig(
            vocab_size=dims.vocab_size,
            hidden_size=largest.hidden,
            num_hidden_layers=subspace.depth,
            num_attention_heads=largest.heads,
            head_dim=dims.head_dim,
            intermediate_size=subspace.max_ffn(),
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            max_position_embeddings=dims.max_position_embeddings,
            type_vocab_size=dims.type_vocab_size,
            layer_norm_eps=layer_norm_eps,
            pad_token_id=pad_token_id,
            roberta_positions=FAMILIES[dims.family].roberta_positions,
            embedding_size=dims.embedding_size or None,
            use_pooler=FAMILIES[dims.family].pooler,
        )
        self.family = FAMILIES[dims.family]
        self.embeddings = ElasticEmbeddings(self.config)
        if dims.embedding_size:
            self.embeddings_project = ElasticLinear(dims.embedding_size, largest.hidden)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(ElasticLayer(self.config) for _ in range(subspace.depth))
        if self.family.pooler:
            self.pooler = nn.Module()
            self.pooler.dense = ElasticLinear(largest.hidden, largest.hidden)
        self.reset_parameters()
        if distill_width:
            # Identity on the leading channels: a teacher-initialised subnet's channels are the first-k
            # slice of the teacher's, so at step 0 the head compares each with the channel it came from.
            self.distill_head = ElasticLinear(largest.hidden, distill_width)
            with torch.no_grad():
                self.distill_head.weight.copy_(torch.eye(distill_width, largest.hidden))
                self.distill_head.bias.zero_()
        self.trains_last_layer = trains_last_layer or bool(distill_width)
        self.active = largest

    def reset_parameters(self):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @contextlib.contextmanager
    def low_precision_weights(self, dtype: torch.dtype | None):
        """Within, under autocast to `dtype`, the elastic linears compute with `dtype` copies of their weights
        made here in one multi-tensor copy (autocast would cast each weight slice at each use, per member,
        forward and backward). For one optimizer step's members: the weights must not change within.
        `dtype` None: nothing changes."""
        if dtype is None or dtype == torch.float32:
            yield
            return
        linears = [m for m in self.modules() if isinstance(m, ElasticLinear) and m.bias is not None]
        if getattr(self, "_low_precision", None) is None:
            self._low_precision = LowPrecisionCopies([t for m in linears for t in (m.weight, m.bias)])
        copies = self._low_precision.refresh(dtype)
        try:
            for i, m in enumerate(linears):
                m.low_precision = (copies[2 * i], copies[2 * i + 1])
            yield
        finally:
            for m in linears:
                m.low_precision = None

    def set_active(self, arch: Arch):
        if not self.subspace.contains(arch):
            raise ValueError(f"{arch} is not in sub-space '{self.subspace.name}'")
        self.active = arch

    def active_layers(self) -> list:
        return arch_layers(self.active, len(self.encoder.layer))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, stop_at_last_qkv=False):
        """Run the active subnet.

        Returns (last hidden state, pooled output, (q, k, v) of the last active layer). With
        `stop_at_last_qkv` the last layer stops after its Q/K/V projections and the hidden
        state and pooled output are None: that is all relation distillation needs.
        """
        arch = self.active
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden_states = self.embeddings(input_ids, token_type_ids, arch.hidden)
        if self.dims.embedding_size:
            hidden_states = self.embeddings_project(hidden_states, arch.hidden)
        # None where nothing is padded (packed training blocks): attention takes its unmasked fused kernels
        additive_mask = None if attention_mask is None else extended_attention_mask(attention_mask, hidden_states.dtype)
        layer_ids = self.active_layers()
        qkv = None
        for position, (index, heads, ffn) in enumerate(zip(layer_ids, arch.layer_heads, arch.layer_ffn)):
            layer = self.encoder.layer[index]
            width = heads * self.dims.head_dim
            if position == len(layer_ids) - 1:
                qkv = layer.qkv(hidden_states, width)
                if stop_at_last_qkv:
                    return None, None, qkv
            hidden_states = layer(hidden_states, additive_mask, width, ffn, qkv=qkv)
        pooled = torch.tanh(self.pooler.dense(hidden_states[:, 0], arch.hidden)) if self.family.pooler else None
        return hidden_states, pooled, qkv

    def untrained_by_distillation(self) -> set:
        """Names of the parameters distillation never reaches. The pooler is never on the path. Relation
        distillation alone stops at the Q/K/V of a subnet's last layer, and the SuperLM's last layer is
        only ever a last layer (of the full-depth subnets), so the rest of it is unreached too; hidden-state
        distillation and the embedding term (`trains_last_layer`) reach it. Left out of the optimizer, these
        keep the teacher's values instead of being shrunk by weight decay."""
        last = f"encoder.layer.{len(self.encoder.layer) - 1}."
        after_qkv = () if self.trains_last_layer else (last + "attention.output.", last + "intermediate.", last + "output.")
        return {name for name, _ in self.named_parameters() if name.startswith(("pooler.", *after_qkv))}

    def student_state(self) -> dict:
        """The weights every subnet is sliced from: the state without the training-only `distill_head`."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("distill_head.")}

    # ----- teacher initialisation and extraction: both are first-k slicing by parameter name

    @staticmethod
    def _remap_layer(name: str, layer_map: list) -> str:
        """Rename `encoder.layer.i.*` to `encoder.layer.{layer_map[i]}.*` (other names unchanged)."""
        parts = name.split(".")
        if parts[:2] == ["encoder", "layer"]:
            parts[2] = str(layer_map[int(parts[2])])
        return ".".join(parts)

    @torch.no_grad()
    def init_from_teacher(self, teacher_state: dict, teacher_layers: int, layer_map: list | None = None):
        """Copy the leading slices of the teacher's weights (names through its family's mapping); SuperLM
        layer i is the teacher's `layer_map[i]`, by default evenly strided over its `teacher_layers`."""
        layer_map = layer_map or stride_layers(len(self.encoder.layer), teacher_layers)
        for name, param in self.named_parameters():
            if name.startswith("distill_head."):  # no teacher counterpart: initialised in __init__
                continue
            teacher_name = self.family.own_name(self._remap_layer(name, layer_map))
            if teacher_name not in teacher_state:
                raise KeyError(f"teacher has no parameter '{teacher_name}'")
            source = teacher_state[teacher_name]
            if any(s < d for s, d in zip(source.shape, param.shape)):
                raise ValueError(f"teacher's {teacher_name} {tuple(source.shape)} is smaller than {tuple(param.shape)}")
            param.copy_(leading(source, param.shape))

    @torch.no_grad()
    def init_from_subnet(self, source: "SuperLM", arch: Arch):
        """Take `arch`'s weights from `source`. This SuperLM is built for a sub-space whose largest arch has
        `arch`'s depth and hidden width (`SubSpace.of_arch`): its layer i is the source layer `arch` runs
        as its i-th, each weight the leading slice, so its subnet `arch` computes what `source`'s does."""
        if len(self.encoder.layer) != arch.layers or not source.subspace.contains(arch):
            raise ValueError(f"{arch} does not fit this SuperLM ({len(self.encoder.layer)} layers) or its source")
        layer_map = arch_layers(arch, len(source.encoder.layer))
        theirs = dict(source.named_parameters())
        for name, param in self.named_parameters():
            if not name.startswith("distill_head."):  # a training aid, not a subnet weight
                param.copy_(leading(theirs[self._remap_layer(name, layer_map)], param.shape))

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """A standalone student (the teacher family's model class, or StudentModel) holding copies of
        `arch`'s weights."""
        if not self.subspace.contains(arch):
            raise ValueError(f"{arch} is not in sub-space '{self.subspace.name}'")
        c = self.config
        config = student_config(
            arch, self.dims, c.layer_norm_eps, c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.pad_token_id
        )
        student = build_student(config)
        layer_map = arch_layers(arch, len(self.encoder.layer))
        own = dict(self.named_parameters())
        family_class = not isinstance(student, StudentModel)
        for name, param in student.named_parameters():
            bert_name = self.family.bert_name(name) if family_class else name
            param.copy_(leading(own[self._remap_layer(bert_name, layer_map)], param.shape))
        return student.eval()
