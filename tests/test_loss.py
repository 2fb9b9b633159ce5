import pytest
import torch

from autodistil_evo.distill.loss import relation_loss


def _qkv(batch=2, seq=10, width=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, seq, width, generator=g) for _ in range(3)]


def test_zero_for_identical_student():
    qkv = _qkv()
    mask = torch.ones(2, 10)
    assert relation_loss(qkv, qkv, mask, 12).item() < 1e-6


def test_positive_and_differentiable():
    teacher = _qkv(seed=0)
    student = [t.clone().requires_grad_(True) for t in _qkv(seed=1)]
    loss = relation_loss(teacher, student, torch.ones(2, 10), 12)
    assert loss.item() > 0.01
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


def test_student_head_count_may_differ_from_teacher():
    teacher, student = _qkv(width=48), _qkv(width=80, seed=3)
    assert relation_loss(teacher, student, torch.ones(2, 10), 8).item() > 0


def test_padding_changes_nothing():
    teacher, student = _qkv(seed=0), _qkv(seed=1)
    mask = torch.ones(2, 10)
    base = relation_loss(teacher, student, mask, 12)
    pad = lambda xs, seed: [  # noqa: E731
        torch.cat([x, torch.randn(2, 5, x.shape[-1], generator=torch.Generator().manual_seed(seed))], 1) for x in xs
    ]
    padded_mask = torch.cat([mask, torch.zeros(2, 5)], 1)
    padded = relation_loss(pad(teacher, 7), pad(student, 8), padded_mask, 12)
    assert abs(padded.item() - base.item()) < 1e-5


def test_width_not_divisible_uses_leading_channels():
    teacher, student = _qkv(width=50, seed=0), _qkv(width=50, seed=1)
    mask = torch.ones(2, 10)
    full = relation_loss(teacher, student, mask, 12)  # 12 * floor(50 / 12) = 48 channels
    leading = relation_loss([t[..., :48] for t in teacher], [s[..., :48] for s in student], mask, 12)
    assert torch.allclose(full, leading)


def test_hidden_loss_is_the_mse_over_real_tokens():
    from autodistil_evo.distill.loss import hidden_loss

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    by_hand = torch.cat([(student[0, :4] - teacher[0, :4]).flatten(), (student[1] - teacher[1]).flatten()]).pow(2).mean()
    assert abs(hidden_loss(student, teacher, mask).item() - by_hand.item()) < 1e-6
    # padding positions may hold anything
    student[0, 4:] += 100.0
    assert abs(hidden_loss(student, teacher, mask).item() - by_hand.item()) < 1e-6
    assert hidden_loss(teacher, teacher, mask).item() == 0.0


def test_embedding_term_similarity_compares_structure_whatever_the_width():
    from autodistil_evo.distill.loss import EmbeddingTerm

    torch.manual_seed(0)
    teacher, student = torch.randn(4, 6, 32), torch.randn(4, 6, 16)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0
    pool = lambda h: torch.nn.functional.normalize((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)  # noqa: E731
    s, t = pool(student), pool(teacher)
    off = ~torch.eye(4, dtype=torch.bool)
    by_hand = ((s @ s.T - t @ t.T)[off] ** 2).mean()
    term = EmbeddingTerm(1.0, "similarity")
    assert abs(term(student, mask, term.target(teacher, mask)).item() - by_hand.item()) < 1e-6
    assert term(teacher, mask, term.target(teacher, mask)).item() < 1e-12
    rotated = teacher @ torch.linalg.qr(torch.randn(32, 32))[0]  # a rotation keeps every cosine
    assert term(rotated, mask, term.target(teacher, mask)).item() < 1e-10
    student.requires_grad_(True)
    term(student, mask, term.target(teacher, mask)).backward()
    assert student.grad.abs().sum() > 0 and student.grad[1, 4:].abs().sum() == 0  # padding gets no gradient


def test_embedding_term_mse_compares_a_narrow_student_with_the_channels_it_was_cut_from():
    """sentence-transformers' MSE on unit embeddings; a narrower student against the teacher's embedding on its
    leading channels, in the SuperLM's channel order (`order_hidden`)."""
    from autodistil_evo.distill.loss import EmbeddingTerm

    torch.manual_seed(0)
    teacher = torch.randn(5, 7, 32)
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[2, 3:] = 0
    order = torch.randperm(32)
    term = EmbeddingTerm(1.0, "mse", ("mean", True), order)
    assert term(teacher[..., order], mask, term.target(teacher, mask)).item() < 1e-12  # the whole teacher, reordered
    student = torch.randn(5, 7, 12)
    pooled = (student * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    reference = (teacher * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    by_hand = (torch.nn.functional.normalize(pooled, dim=-1)
               - torch.nn.functional.normalize(reference[:, order[:12]], dim=-1)).pow(2).sum(-1).mean()
    assert abs(term(student, mask, term.target(teacher, mask)).item() - by_hand.item()) < 1e-6
    cls = EmbeddingTerm(1.0, "mse", ("cls", False))
    assert abs(cls(teacher, mask, cls.target(teacher, mask)).item()) < 1e-12


def test_no_mask_equals_an_all_ones_mask_and_padding_changes_nothing(tiny_teacher, tiny_space_file):
    """Packed blocks pass no mask (fused attention, no mask built): every loss and the SuperLM's output equal those
    with an all-ones mask; a padded batch gives its real rows the loss they have unpadded."""
    from autodistil_evo.distill.loss import EmbeddingTerm, hidden_loss
    from autodistil_evo.spaces import load_space
    from autodistil_evo.supernet import SuperLM
    from autodistil_evo.teacher import RelationTap, load_teacher

    teacher = load_teacher(str(tiny_teacher))
    space = load_space(tiny_space_file)
    superlm = SuperLM(space.subspace("small"), space.dims(teacher.shape), dropout=0.0).eval()
    superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
    superlm.set_active(space.subspace("small").largest())
    ids = torch.randint(5, 1000, (3, 16), generator=torch.Generator().manual_seed(0))
    ones = torch.ones_like(ids)

    def losses(ids, mask):
        with RelationTap(teacher.model, -1, hidden=True) as tap, torch.no_grad():
            tapped = tap(teacher.model, ids, mask)
            hidden, _, qkv = superlm(ids, mask)
        return (hidden, relation_loss(tapped[:3], qkv, mask, 4), hidden_loss(hidden[..., :16], tapped[3][..., :16], mask),
                EmbeddingTerm(1.0)(hidden, mask, EmbeddingTerm(1.0).target(tapped[3], mask)))

    for a, b in zip(losses(ids, None), losses(ids, ones)):
        assert (a - b).abs().max().item() <= 1e-6
    padded = torch.cat([ids, torch.zeros(3, 5, dtype=ids.dtype)], dim=1)
    mask = torch.cat([ones, torch.zeros(3, 5, dtype=ones.dtype)], dim=1)
    for a, b in zip(losses(padded, mask)[1:], losses(ids, None)[1:]):
        assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("masked", [False, True])
def test_relation_loss_is_the_sum_of_q_k_v_kl_by_hand(masked):
    """Q, K and V's relations run stacked; the loss is still KL(teacher || student) of each, averaged over relation
    heads and real queries, summed over the three."""
    torch.manual_seed(0)
    teacher = [torch.randn(2, 7, 24) for _ in range(3)]
    student = [torch.randn(2, 7, 16) for _ in range(3)]
    mask = torch.ones(2, 7, dtype=torch.long)
    if masked:
        mask[1, 5:] = 0

    def relations(x, heads):
        b, s, w = x.shape
        x = x.reshape(b, s, heads, w // heads).transpose(1, 2)
        scores = x @ x.transpose(-1, -2) / (w // heads) ** 0.5
        return scores.masked_fill(mask[:, None, None, :] == 0, float("-inf")).log_softmax(-1)

    by_hand = 0.0
    for t, s in zip(teacher, student):
        log_p, log_q = relations(t, 4), relations(s, 4)
        kl = (log_p.exp() * (log_p - log_q)).nan_to_num().sum(-1).mean(1)  # [batch, seq]
        by_hand = by_hand + (kl * mask).sum() / mask.sum()
    assert abs(relation_loss(teacher, student, mask if masked else None, 4).item() - by_hand.item()) <= 1e-5
