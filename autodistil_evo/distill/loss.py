"""MiniLMv2 multi-head self-attention relation distillation (Wang et al., 2021).

Q, K and V of one teacher layer and of the student's last layer are each split into R relation
heads (independent of either model's attention heads), turned into scaled dot-product relations
softmax(x_i . x_j / sqrt(d_r)) over key positions, and the student is pulled to the teacher by
KL(teacher || student), summed over Q-Q, K-K and V-V and averaged over relation heads and real
(non-padding) query positions. Padding keys are masked out, so padding changes nothing.

When a width is not divisible by R (e.g. 7 heads x 64 = 448 with R = 12), only the first
R * floor(width / R) channels are used, as the MiniLMv2 reference implementation does.

The KL is computed as  sum_k p_k log p_k - (sum_k p_k s_k - logsumexp_k s_k)  with s the
student's scaled scores: the teacher's part is computed once per batch (the search reuses it for
every arch) and the student's log-softmax is never materialised. Relations and KL are computed in
fp32 whatever the models' precision (bf16 softmax over 128+ keys loses the small probabilities
the KL is made of). A mask is applied whenever one is given (a data-dependent skip would need a
host synchronisation every call); packed training blocks have no padding and pass none.

`EmbeddingTerm` is the optional sentence-embedding term. It is computed on whole short texts (one
per training block, `data.block_sentences`), on exactly the embedding the exported student produces:
its last hidden state pooled as the teacher's sentence-transformers modules pool (mean and
normalisation for all-MiniLM-L6-v2). Its target is the teacher's own embedding of the same texts.
`mse` is sentence-transformers' distillation loss (squared distance of the unit embeddings); a
narrower student is compared with the teacher's embedding on the channels it was cut from (its
leading channels in the SuperLM's order), so a subnet that keeps every channel starts at 0.
`similarity` compares the batch's cosine-similarity matrices instead, which needs no channel map.

`hidden_loss` is the optional hidden-state term (TinyBERT, Jiao et al., 2020): the MSE between the
student's last hidden state, mapped to the teacher's width by a learned matrix, and the tapped
teacher layer's output, over real tokens.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from autodistil_evo.teacher import pool


def relation_scores(x: torch.Tensor, relation_heads: int, key_mask: torch.Tensor | None) -> torch.Tensor:
    """[..., batch, seq, width] -> scaled self-relation scores [..., batch, R, seq, seq], padding keys masked (None:
    nothing is padded)."""
    *lead, seq, width = x.shape
    head_size = width // relation_heads
    if head_size == 0:
        raise ValueError(f"Q/K/V width {width} is smaller than {relation_heads} relation heads")
    x = x[..., : relation_heads * head_size].float().reshape(*lead, seq, relation_heads, head_size).transpose(-3, -2)
    scores = torch.matmul(x * head_size**-0.5, x.transpose(-1, -2))
    if key_mask is None:
        return scores
    return scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)


def _key_mask(attention_mask):
    return None if attention_mask is None else attention_mask.bool()


def teacher_relations(teacher_qkv, relation_heads: int, attention_mask: torch.Tensor | None) -> tuple:
    """Q, K and V's relations at once (stacked: one product, softmax and sum for the three): the relation
    probabilities p [3, batch, R, seq, seq] and sum_k p log p per query [3, batch, R, seq]."""
    log_p = torch.log_softmax(relation_scores(torch.stack(tuple(teacher_qkv)), relation_heads, _key_mask(attention_mask)),
                              dim=-1)
    p = log_p.exp()
    return p, (p * log_p).sum(-1)


def relation_loss(teacher_qkv, student_qkv, attention_mask: torch.Tensor, relation_heads: int = 12) -> torch.Tensor:
    """Sum over Q-Q, K-K, V-V of KL(teacher relations || student relations)."""
    relations = teacher_relations(teacher_qkv, relation_heads, attention_mask)
    return relation_loss_from_teacher(relations, student_qkv, attention_mask, relation_heads)


def relation_loss_from_teacher(relations, student_qkv, attention_mask, relation_heads: int) -> torch.Tensor:
    """`relation_loss` with the teacher's side (`teacher_relations`) precomputed. `attention_mask` None: nothing
    is padded, every query counts alike and no mask is built."""
    p, p_log_p = relations
    scores = relation_scores(torch.stack(tuple(student_qkv)), relation_heads, _key_mask(attention_mask))
    # sum_k p_k log q_k = sum_k p_k s_k - logsumexp(s), since p sums to 1 over real keys
    cross = (p * scores).sum(-1) - torch.logsumexp(scores, dim=-1)
    kl_per_query = (p_log_p - cross).mean(-2)  # [3, batch, seq], averaged over relation heads
    return _token_mean(kl_per_query, attention_mask) * kl_per_query.shape[0]


def _token_mean(values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of [..., batch, seq] `values` over the real (non-padding) tokens and the leading dims; None: over all."""
    if attention_mask is None:
        return values.mean()
    weight = attention_mask.float().expand_as(values)
    return (values * weight).sum() / weight.sum()


def hidden_loss(student_projected: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (non-padding) tokens and the teacher's channels, in fp32."""
    return _token_mean((student_projected.float() - teacher_hidden.float()).pow(2).mean(-1), attention_mask)


EMBEDDING_LOSSES = ("mse", "similarity")


@dataclass
class EmbeddingTerm:
    """The sentence-embedding term: `weight` x the `kind` loss between the student's pooled embedding and the
    teacher's. `channel_order`: SuperLM channel j is the teacher's channel `channel_order[j]` (`order_hidden`), on
    the embeddings' device; None: the teacher's own order."""

    weight: float
    kind: str = "mse"
    pooling: tuple = ("mean", True)
    channel_order: torch.Tensor | None = None

    def target(self, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The teacher's sentence embeddings, channels in the SuperLM's order."""
        embedding = pool(teacher_hidden, attention_mask, self.pooling)
        return embedding if self.channel_order is None else embedding[:, self.channel_order]

    def __call__(self, student_hidden: torch.Tensor, attention_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        student = pool(student_hidden, attention_mask, self.pooling)
        if self.kind == "similarity":
            return similarity_loss(student, target)
        s, t = (F.normalize(x, dim=-1) for x in (student, target[:, : student.shape[1]]))
        return (s - t).pow(2).sum(-1).mean()


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the batch's cosine-similarity matrices of two sets of embeddings [batch, width of each], over
    the off-diagonal pairs (the diagonal is 1 for both)."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    batch = s.shape[0]
    off = ~torch.eye(batch, dtype=torch.bool, device=s.device)
    return (s @ s.T - t @ t.T)[off].pow(2).mean() if batch > 1 else (s.sum() * 0.0)
