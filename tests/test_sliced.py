"""Sliced weights whose backward writes only their slice (`supernet.sliced`) equal autograd through plain slices."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import autodistil_evo.supernet.elastic as elastic
from autodistil_evo.spaces import load_space
from autodistil_evo.supernet import SuperLM
from autodistil_evo.supernet.sliced import sliced_embedding, sliced_layer_norm, sliced_linear

PLAIN = {
    "sliced_linear": lambda x, w, b, out: F.linear(x, w[:out, : x.shape[-1]], b[:out]),
    "sliced_layer_norm": lambda x, w, b, eps: F.layer_norm(x, (x.shape[-1],), w[: x.shape[-1]], b[: x.shape[-1]], eps),
    "sliced_embedding": lambda ids, w, width, padding_idx=None: F.embedding(ids, w, padding_idx)[..., :width],
}


def test_float64_gradients_of_every_slice_equal_plain_slicing():
    """Three calls at different widths accumulate into one .grad, as a sandwich's members do; the padding row of the
    word table gets no gradient; the input's gradient passes gradcheck."""
    torch.manual_seed(0)
    params = {"w": torch.randn(8, 6), "b": torch.randn(8), "ln_w": torch.randn(6), "ln_b": torch.randn(6),
              "table": torch.randn(20, 6)}
    params = {k: v.double().requires_grad_() for k, v in params.items()}
    ids = torch.tensor([[1, 0, 3, 3], [5, 19, 0, 2]])

    def grads(linear, layer_norm, embedding):
        for p in params.values():
            p.grad = None
        total = 0.0
        for width, out in ((6, 8), (4, 5), (3, 8)):
            x = layer_norm(embedding(ids, params["table"], width, 0), params["ln_w"], params["ln_b"], 1e-12)
            total = total + linear(x, params["w"], params["b"], out).sin().sum()
        total.backward()
        return total.detach(), {k: p.grad.clone() for k, p in params.items()}

    plain = grads(PLAIN["sliced_linear"], PLAIN["sliced_layer_norm"], PLAIN["sliced_embedding"])
    mine = grads(sliced_linear, sliced_layer_norm, sliced_embedding)
    assert abs(plain[0] - mine[0]) <= 1e-12
    for name in params:
        assert (plain[1][name] - mine[1][name]).abs().max().item() <= 1e-12, name
    assert mine[1]["table"][0].abs().max() == 0  # the padding row
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sliced_linear(x, params["w"], params["b"], 4), (x,))
    assert torch.autograd.gradcheck(lambda x: sliced_layer_norm(x, params["ln_w"], params["ln_b"], 1e-5), (x,))


def _sandwich_grads(monkeypatch, plain: bool, autocast: bool):
    if plain:
        for name, fn in PLAIN.items():
            monkeypatch.setattr(elastic, name, fn)
    space = load_space("spaces/minilm-l6-layerwise.yaml")
    sub = space.subspace("tiny")
    torch.manual_seed(0)
    superlm = SuperLM(sub, space.dims(), dropout=0.0, trains_last_layer=True)
    ids = torch.randint(1, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(0)
    archs = [sub.largest(), sub.smallest(), sub.sample(rng), sub.sample(rng)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs = []
        for arch in archs:
            superlm.set_active(arch)
            hidden, _, _ = superlm(ids)
            outputs.append(hidden.float())
            hidden.float().pow(2).mean().backward()
    return outputs, {n: p.grad.clone() for n, p in superlm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("autocast, tolerance", [(False, 1e-6), (True, 2e-2)])
def test_a_sandwich_gives_the_outputs_and_gradients_of_plain_slicing(monkeypatch, autocast, tolerance):
    """Four members (largest, smallest, two per-layer random ones) accumulate their gradients: outputs and summed
    gradients equal those of autograd through plain slices (fp32 within 1e-6; bf16 autocast within its rounding)."""
    mine = _sandwich_grads(monkeypatch, plain=False, autocast=autocast)
    with monkeypatch.context() as patch:
        plain = _sandwich_grads(patch, plain=True, autocast=autocast)
    for a, b in zip(mine[0], plain[0]):
        assert (a - b).abs().max().item() <= tolerance
    assert mine[1].keys() == plain[1].keys()
    for name in plain[1]:
        scale = plain[1][name].abs().max().item() or 1.0
        assert (mine[1][name] - plain[1][name]).abs().max().item() <= tolerance * max(scale, 1.0), name
