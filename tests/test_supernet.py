"""The SuperLM's subnets equal their extracted students; analytic cost equals measured cost."""

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertModel

from autodistil_evo.spaces import Arch, count_flops, count_params, load_space
from autodistil_evo.supernet import StudentModel, SuperLM, build_student, stride_layers, student_config
from autodistil_evo.teacher import load_teacher

SHIPPED = [
    "spaces/autodistil-bert-base.yaml",
    "spaces/autodistil-bert-base-k1.yaml",
    "spaces/autodistil-bert-base-layerwise.yaml",
    "spaces/minilm-l6.yaml",
    "spaces/minilm-l6-layerwise.yaml",
    "spaces/minilm-l6-wide.yaml",
    "spaces/minilm-l6-keep.yaml",
]


def random_archs(sub, n, seed):
    """`n` random archs of a sub-space (heterogeneous where it is per layer)."""
    rng = np.random.default_rng(seed)
    return [sub.sample(rng) for _ in range(n)]


def _inputs(vocab, seed=0, batch=2, seq=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, seq // 2 :] = 0  # padding in the second sequence
    return ids, mask


def _assert_equivalent(superlm, arch, vocab):
    superlm.eval().set_active(arch)
    ids, mask = _inputs(vocab)
    with torch.no_grad():
        hidden, pooled, _ = superlm(ids, mask)
        student = superlm.extract(arch)
        out = student(input_ids=ids, attention_mask=mask)
    assert (out.last_hidden_state - hidden).abs().max().item() <= 1e-5
    assert (out.pooler_output - pooled).abs().max().item() <= 1e-5
    return student


@pytest.mark.parametrize("space_file", SHIPPED)
def test_subnets_of_shipped_spaces_equal_extracted_students(space_file):
    space = load_space(space_file)
    dims = replace(space.dims(), vocab_size=512)  # a small vocabulary keeps the big spaces fast
    for sub in space.subspaces.values():
        torch.manual_seed(0)
        superlm = SuperLM(sub, dims)
        archs = [sub.largest(), sub.smallest(), *random_archs(sub, 4, 0)]
        if sub.per_layer:
            assert sum(not a.uniform for a in archs) >= 3  # heterogeneous students are really tested
        for arch in archs:
            student = _assert_equivalent(superlm, arch, dims.vocab_size)
            bert_expressible = arch.uniform and arch.heads * dims.head_dim == arch.hidden
            assert isinstance(student, BertModel if bert_expressible else StudentModel)


def test_bert_expressible_student_is_a_bert_model(tiny_space_file, tiny_teacher):
    teacher = load_teacher(str(tiny_teacher))
    space = load_space(tiny_space_file)
    sub = space.subspace("big")
    superlm = SuperLM(sub, space.dims(teacher.shape), dropout=0.0)
    superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
    # The largest arch of "big" is the teacher's own shape: the subnet is the teacher.
    arch = Arch(2, 4, 64, 2.0)
    student = _assert_equivalent(superlm, arch, 30522)
    assert isinstance(student, BertModel)
    ids, mask = _inputs(30522)
    with torch.no_grad():
        expected = teacher.model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = student(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (expected - got).abs().max().item() <= 1e-5


def test_random_archs_from_teacher_init(tiny_space_file, tiny_teacher):
    teacher = load_teacher(str(tiny_teacher))
    space = load_space(tiny_space_file)
    rng = random.Random(1)
    for sub in space.subspaces.values():
        superlm = SuperLM(sub, space.dims(teacher.shape))
        superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
        for arch in rng.sample(list(sub.candidates()), 8):
            _assert_equivalent(superlm, arch, 30522)


def test_teacher_init_slices_leading_weights(tiny_space_file, tiny_teacher):
    teacher = load_teacher(str(tiny_teacher))
    space = load_space(tiny_space_file)
    sub = space.subspace("small")
    superlm = SuperLM(sub, space.dims(teacher.shape))
    superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
    t = teacher.state_dict()
    assert torch.equal(superlm.encoder.layer[1].attention.self.query.weight, t["encoder.layer.1.attention.self.query.weight"][:48, :32])
    assert torch.equal(superlm.embeddings.word_embeddings.weight, t["embeddings.word_embeddings.weight"][:, :32])


def test_uniform_stride_depth():
    assert stride_layers(4, 12) == [0, 3, 6, 9]
    assert stride_layers(9, 12) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert stride_layers(6, 6) == list(range(6))


def math_attention():
    """SDPA's math backend: its matrix products are ones FlopCounterMode counts (the fused CPU kernel's are not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def test_forward_cost_tracks_the_subnet():
    """Slicing, not masking: a small subnet's forward does fewer FLOPs than the largest."""
    space = load_space("spaces/minilm-l6.yaml")
    sub = space.subspace("base")
    dims = space.dims()
    superlm = SuperLM(sub, dims).eval()
    ids = torch.randint(0, 1000, (1, 32))
    measured = {}
    for arch in (sub.largest(), sub.smallest()):
        superlm.set_active(arch)
        with FlopCounterMode(display=False) as counter, torch.no_grad(), math_attention():
            superlm(ids)
        measured[arch] = counter.get_total_flops()
        assert measured[arch] == count_flops(arch, dims, 32)
        with FlopCounterMode(display=False) as counter, torch.no_grad(), math_attention():
            superlm(ids, stop_at_last_qkv=True)  # as relation distillation runs it: counted as run
        assert counter.get_total_flops() == count_flops(arch, dims, 32, stop_at_last_qkv=True) < measured[arch]


@pytest.mark.parametrize("space_file", SHIPPED)
def test_analytic_params_and_flops_match_measurement(space_file):
    space = load_space(space_file)
    dims = space.dims()
    for sub in space.subspaces.values():
        for arch in random_archs(sub, 2, 2):
            student = build_student(student_config(arch, dims)).eval()
            assert sum(p.numel() for p in student.parameters()) == count_params(arch, dims)
            embeddings = sum(p.numel() for p in student.embeddings.parameters())
            assert count_params(arch, dims, include_embeddings=False) == count_params(arch, dims) - embeddings
            seq = 24
            with FlopCounterMode(display=False) as counter, torch.no_grad(), math_attention():
                student(input_ids=torch.zeros((1, seq), dtype=torch.long))
            assert counter.get_total_flops() == count_flops(arch, dims, seq)


def test_fused_attention_equals_the_eager_path_on_a_padded_batch(monkeypatch):
    """SuperLM subnets and StudentModels attend through `scaled_dot_product_attention`; in fp32 with dropout
    off they equal the eager matmul-softmax-matmul path (the reference kept in benchmarks/) within 1e-5."""
    import importlib
    import sys

    import autodistil_evo.supernet.elastic as elastic
    import autodistil_evo.supernet.modeling_student as modeling_student
    from autodistil_evo.spaces.space import parse_space

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    eager_attention = importlib.import_module("train_throughput").eager_attention
    sys.modules.pop("train_throughput", None)
    space = parse_space({"name": "t", "head_dim": 16, "vocab_size": 500, "max_position_embeddings": 64, "subspaces": {
        "s": {"layers": [2, 3], "heads": [2, 3], "hidden": [40, 48], "mlp_ratio": [1.5, 2.0], "per_layer": ["heads"]}}})
    torch.manual_seed(0)
    superlm = SuperLM(space.subspace("s"), space.dims()).eval()
    arch = Arch(3, (3, 2, 3), 40, 2.0)  # Q/K/V width differs from hidden: a StudentModel
    superlm.set_active(arch)
    student = superlm.extract(arch)
    ids = torch.randint(5, 500, (3, 20))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    with torch.no_grad():
        fused = superlm(ids, mask)[0], student(input_ids=ids, attention_mask=mask).last_hidden_state
        monkeypatch.setattr(elastic, "multi_head_attention", eager_attention)
        monkeypatch.setattr(modeling_student, "multi_head_attention", eager_attention)
        eager = superlm(ids, mask)[0], student(input_ids=ids, attention_mask=mask).last_hidden_state
    for a, b in zip(fused, eager):
        assert (a - b)[mask.bool()].abs().max().item() <= 1e-5
    assert (fused[0] - fused[1])[mask.bool()].abs().max().item() <= 1e-5


def test_wide_space_reaches_the_layer_dropped_teacher():
    """minilm-l6-wide.yaml: the shipped sub-spaces unchanged, plus `wide`, whose full-width subnets start
    (from the teacher) as the teacher with layers dropped: the search can find that shape itself."""
    import copy

    teacher = load_teacher(None)
    wide, narrow = load_space("spaces/minilm-l6-wide.yaml"), load_space("spaces/minilm-l6.yaml")
    wide.validate_against(teacher.shape)
    for name, sub in narrow.subspaces.items():
        assert set(wide.subspace(name).candidates()) == set(sub.candidates())
    superlm = SuperLM(wide.subspace("wide"), wide.dims(teacher.shape), dropout=0.0).eval()
    superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
    ids, mask = _inputs(teacher.shape.vocab_size)
    for depth, kept in ((4, [0, 1, 3, 4]), (2, [0, 3]), (1, [0])):
        dropped = copy.deepcopy(teacher.model).eval()
        dropped.encoder.layer = torch.nn.ModuleList(dropped.encoder.layer[i] for i in kept)
        student = superlm.extract(Arch(depth, 12, 384, 4.0)).eval()
        with torch.no_grad():
            expected = dropped(input_ids=ids, attention_mask=mask).last_hidden_state
            got = student(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (expected - got).abs().max().item() <= 1e-5
