"""MiniLMv2 multi-head self-attention relation distillation (Wang et al., 2021).

Q, K and V of one teacher layer and of the student's last layer are each split into R relation
heads (independent of either model's attention heads), turned into scaled dot-product relations
softmax(x_i . x_j / sqrt(d_r)) over key positions, and the student is pulled to the teacher by
KL(teacher || student), summed over Q-Q, K-K and V-V and averaged over relation heads and real
(non-padding) query positions. Padding keys are masked out, so padding changes nothing.

When a width is not divisible by R (e.g. 7 heads x 64 = 448 with R = 12), only the first
R * floor(width / R) channels are used, as the MiniLMv2 reference implementation does.
"""

import torch
from torch.nn import functional as F


def relation_log_probs(x: torch.Tensor, relation_heads: int, key_mask: torch.Tensor) -> torch.Tensor:
    """[batch, seq, width] -> log softmax of scaled self-relations, [batch, R, seq, seq]."""
    batch, seq, width = x.shape
    head_size = width // relation_heads
    if head_size == 0:
        raise ValueError(f"Q/K/V width {width} is smaller than {relation_heads} relation heads")
    x = x[..., : relation_heads * head_size].reshape(batch, seq, relation_heads, head_size).transpose(1, 2)
    scores = torch.matmul(x, x.transpose(-1, -2)) / head_size**0.5
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores.float(), dim=-1)


def relation_loss(teacher_qkv, student_qkv, attention_mask: torch.Tensor, relation_heads: int = 12) -> torch.Tensor:
    """Sum over Q-Q, K-K, V-V of KL(teacher relations || student relations)."""
    key_mask = attention_mask.bool()
    teacher_log_probs = [relation_log_probs(x, relation_heads, key_mask) for x in teacher_qkv]
    return relation_loss_from_teacher(teacher_log_probs, student_qkv, attention_mask, relation_heads)


def relation_loss_from_teacher(teacher_log_probs, student_qkv, attention_mask, relation_heads: int) -> torch.Tensor:
    """`relation_loss` with the teacher's relations precomputed (the search reuses them for every arch)."""
    key_mask = attention_mask.bool()
    query_weight = attention_mask.float()
    query_weight = query_weight / query_weight.sum()
    total = 0.0
    for log_p, student_x in zip(teacher_log_probs, student_qkv):
        log_q = relation_log_probs(student_x, relation_heads, key_mask)
        # Masked keys have p = 0 exactly; xlogy-free form is safe since they share the same mask.
        kl_per_query = (log_p.exp() * (log_p - log_q)).sum(-1)  # [batch, R, seq]
        total = total + (kl_per_query.mean(1) * query_weight).sum()
    return total
