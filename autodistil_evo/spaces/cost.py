"""Exact parameter and FLOP counts of a student, layer by layer, without building it.

Params: every weight and bias of the student encoder (embeddings, layers, and the pooler and
ELECTRA's embedding projection where the teacher's family has them);
`include_embeddings=False` leaves out the word/position/token-type tables and their LayerNorm.

FLOPs: one forward of one sequence of `seq_len` tokens, counting 2 FLOPs per multiply-add of
every matrix product (Q/K/V, attention scores, attention x V, attention output, FFN, pooler on
the first token), as `torch.utils.flop_counter.FlopCounterMode` does. Embedding lookups,
biases, LayerNorm, softmax and activations count as zero, as there.

Both grow with every gene, so a sub-space's cheapest arch is its smallest and its dearest its
largest; and both are sums of per-layer terms linear in (Q/K/V width, FFN size), so the mean
over gene-by-gene random archs is exact without enumerating them.
"""

from autodistil_evo.spaces.families import FAMILIES
from autodistil_evo.spaces.space import Arch, ModelDims, SubSpace


def _layer_params(h: int, a: int, f: int) -> int:
    return (
        3 * (h * a + a)  # query, key, value
        + (a * h + h) + 2 * h  # attention output dense + LayerNorm
        + (h * f + f) + (f * h + h) + 2 * h  # FFN in, FFN out, LayerNorm
    )


def _layer_flops(s: int, h: int, a: int, f: int) -> int:
    return (
        2 * s * h * a * 3  # Q, K, V projections
        + 2 * s * s * a * 2  # scores and attention x V
        + 2 * s * a * h  # attention output
        + 2 * s * h * f * 2  # FFN in and out
    )


def _layers(arch: Arch, dims: ModelDims):
    return [(heads * dims.head_dim, ffn) for heads, ffn in zip(arch.layer_heads, arch.layer_ffn)]


def _has_pooler(dims: ModelDims) -> bool:
    return FAMILIES[dims.family].pooler


def count_params(arch: Arch, dims: ModelDims, include_embeddings: bool = True) -> int:
    h = arch.hidden
    total = sum(_layer_params(h, a, f) for a, f in _layers(arch, dims)) + (h * h + h) * _has_pooler(dims)
    if include_embeddings:
        e = dims.embedding_size or h  # ELECTRA: tables and their LayerNorm at embedding_size, then a projection
        total += (dims.vocab_size + dims.max_position_embeddings + dims.type_vocab_size) * e + 2 * e
        total += (e * h + h) if dims.embedding_size else 0
    return total


def _stopped_layer_flops(s: int, h: int, a: int, f: int) -> int:
    """What a last layer stopped after its Q/K/V projections costs (relation distillation needs no more)."""
    return 2 * s * h * a * 3


def count_flops(arch: Arch, dims: ModelDims, seq_len: int, stop_at_last_qkv: bool = False) -> int:
    """FLOPs of one forward; with `stop_at_last_qkv`, of the forward that stops after the last layer's Q/K/V
    (no pooler), as relation distillation runs it."""
    h = arch.hidden
    projection = 2 * seq_len * dims.embedding_size * h  # zero unless ELECTRA's factorised embeddings
    layers = [_layer_flops(seq_len, h, a, f) for a, f in _layers(arch, dims)]
    if stop_at_last_qkv:
        return sum(layers[:-1]) + _stopped_layer_flops(seq_len, h, *_layers(arch, dims)[-1]) + projection
    return sum(layers) + 2 * h * h * _has_pooler(dims) + projection


def mean_flops(subspace: SubSpace, dims: ModelDims, seq_len: int, stop_at_last_qkv: bool = False) -> float:
    """Mean FLOPs of `SubSpace.sample` archs: depth and hidden uniform, each layer's genes uniform."""
    total = 0.0
    for depth in subspace.layers:
        for h in subspace.hidden:
            shapes = [(heads * dims.head_dim, Arch(1, heads, h, r).ffn) for heads in subspace.heads for r in subspace.mlp_ratio]
            full = sum(_layer_flops(seq_len, h, a, f) for a, f in shapes) / len(shapes)
            if stop_at_last_qkv:
                stopped = sum(_stopped_layer_flops(seq_len, h, a, f) for a, f in shapes) / len(shapes)
                total += (depth - 1) * full + stopped + 2 * seq_len * dims.embedding_size * h
            else:
                total += depth * full + 2 * h * h * _has_pooler(dims) + 2 * seq_len * dims.embedding_size * h
    return total / (len(subspace.layers) * len(subspace.hidden))


