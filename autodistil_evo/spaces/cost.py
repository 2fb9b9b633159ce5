"""Exact parameter and FLOP counts of a student, without building it.

Params: every weight and bias of the student encoder (embeddings, layers, pooler);
`include_embeddings=False` leaves out the word/position/token-type tables and their LayerNorm.

FLOPs: one forward of one sequence of `seq_len` tokens, counting 2 FLOPs per multiply-add of
every matrix product (Q/K/V, attention scores, attention x V, attention output, FFN, pooler on
the first token), as `torch.utils.flop_counter.FlopCounterMode` does. Embedding lookups,
biases, LayerNorm, softmax and activations count as zero, as there.
"""

from autodistil_evo.spaces.space import Arch, ModelDims


def count_params(arch: Arch, dims: ModelDims, include_embeddings: bool = True) -> int:
    h, a, f = arch.hidden, arch.heads * dims.head_dim, arch.ffn
    per_layer = (
        3 * (h * a + a)  # query, key, value
        + (a * h + h) + 2 * h  # attention output dense + LayerNorm
        + (h * f + f) + (f * h + h) + 2 * h  # FFN in, FFN out, LayerNorm
    )
    pooler = h * h + h
    total = arch.layers * per_layer + pooler
    if include_embeddings:
        total += (dims.vocab_size + dims.max_position_embeddings + dims.type_vocab_size) * h + 2 * h
    return total


def count_flops(arch: Arch, dims: ModelDims, seq_len: int) -> int:
    s, h, a, f = seq_len, arch.hidden, arch.heads * dims.head_dim, arch.ffn
    per_layer = (
        2 * s * h * a * 3  # Q, K, V projections
        + 2 * s * s * a * 2  # scores and attention x V
        + 2 * s * a * h  # attention output
        + 2 * s * h * f * 2  # FFN in and out
    )
    return arch.layers * per_layer + 2 * h * h
