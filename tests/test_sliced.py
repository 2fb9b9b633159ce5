"""Sliced weights whose backward writes only their slice (`supernet.sliced`) equal autograd through plain slices."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import autodistil_evo.supernet.elastic as elastic
from autodistil_evo.spaces import load_space
from autodistil_evo.supernet import SuperLM
from autodistil_evo.supernet.sliced import sliced_embedding, sliced_layer_norm, sliced_linear, sliced_linears

PLAIN = {
    "sliced_linear": lambda x, w, b, out, low=None: F.linear(x, w[:out, : x.shape[-1]], b[:out]),
    "sliced_linears": lambda x, params, out, lows=None: tuple(F.linear(x, w[:out, : x.shape[-1]], b[:out]) for w, b in params),
    "sliced_layer_norm": lambda x, w, b, eps: F.layer_norm(x, (x.shape[-1],), w[: x.shape[-1]], b[: x.shape[-1]], eps),
    "sliced_embedding": lambda ids, w, width, padding_idx=None: F.embedding(ids, w, padding_idx)[..., :width],
}


def test_float64_gradients_of_every_slice_equal_plain_slicing():
    """Three calls at different widths accumulate into one .grad, as a sandwich's members do, for a single linear
    and for Q, K and V computed as one product; the padding row of the word table gets no gradient; the input's
    gradient passes gradcheck."""
    torch.manual_seed(0)
    params = {"w": torch.randn(8, 6), "b": torch.randn(8), "ln_w": torch.randn(6), "ln_b": torch.randn(6),
              "table": torch.randn(20, 6), "q": torch.randn(7, 6), "qb": torch.randn(7), "k": torch.randn(7, 6),
              "kb": torch.randn(7), "v": torch.randn(7, 6), "vb": torch.randn(7)}
    params = {k: v.double().requires_grad_() for k, v in params.items()}
    ids = torch.tensor([[1, 0, 3, 3], [5, 19, 0, 2]])

    def grads(linear, layer_norm, embedding, linears):
        for p in params.values():
            p.grad = None
        total = 0.0
        for width, out in ((6, 8), (4, 5), (3, 8)):
            x = layer_norm(embedding(ids, params["table"], width, 0), params["ln_w"], params["ln_b"], 1e-12)
            total = total + linear(x, params["w"], params["b"], out).sin().sum()
            qkv = linears(x, [(params[n], params[n + "b"]) for n in "qkv"], min(out, 7))  # Q, K, V as one product
            total = total + sum((t * (i + 1)).cos().sum() for i, t in enumerate(qkv))
        total.backward()
        return total.detach(), {k: p.grad.clone() for k, p in params.items()}

    plain = grads(*(PLAIN[n] for n in ("sliced_linear", "sliced_layer_norm", "sliced_embedding", "sliced_linears")))
    mine = grads(sliced_linear, sliced_layer_norm, sliced_embedding, sliced_linears)
    assert abs(plain[0] - mine[0]) <= 1e-12
    for name in params:
        assert (plain[1][name] - mine[1][name]).abs().max().item() <= 1e-12, name
    assert mine[1]["table"][0].abs().max() == 0  # the padding row
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sliced_linear(x, params["w"], params["b"], 4), (x,))
    qkv = [(params[n], params[n + "b"]) for n in "qkv"]
    assert torch.autograd.gradcheck(lambda x: sum(t.sum() * (i + 1) for i, t in enumerate(sliced_linears(x, qkv, 4))), (x,))
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
    # under autocast, the step's low-precision copies of the weights (plain slicing casts at each use)
    low = torch.bfloat16 if autocast else None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), superlm.low_precision_weights(low):
        outputs = []
        for arch in archs:
            superlm.set_active(arch)
            hidden, _, _ = superlm(ids)
            outputs.append(hidden.float())
            # a fixed random probe of the output (a LayerNorm'd output's mean square has almost no gradient)
            probe = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(2))
            (hidden.float() * probe).sum().backward()
    return outputs, {n: p.grad.clone() for n, p in superlm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("autocast, tolerance", [(False, 1e-6), (True, 2e-2)])
def test_a_sandwich_gives_the_outputs_and_gradients_of_plain_slicing(monkeypatch, autocast, tolerance):
    """Four members (largest, smallest, two per-layer random ones) accumulate their gradients: outputs and summed
    gradients equal those of autograd through plain slices (fp32 within 1e-6; bf16 autocast, with the step's
    low-precision weight copies, within its rounding)."""
    mine = _sandwich_grads(monkeypatch, plain=False, autocast=autocast)
    with monkeypatch.context() as patch:
        plain = _sandwich_grads(patch, plain=True, autocast=autocast)
    for a, b in zip(mine[0], plain[0]):
        assert (a - b).abs().max().item() <= tolerance
    assert mine[1].keys() == plain[1].keys()
    # relative to each gradient, floored at 1e-3 of the largest (a key bias has none: attention ignores it)
    floor = 1e-3 * max(g.abs().max().item() for g in plain[1].values())
    for name in plain[1]:
        scale = max(plain[1][name].abs().max().item(), floor)
        assert (mine[1][name] - plain[1][name]).abs().max().item() <= tolerance * scale, name


def test_low_precision_copies_are_this_steps_weights():
    """Under autocast the elastic linears compute with bf16 copies made on entry, exactly as autocast's own casts;
    after the weights change the next entry's copies follow them, and on exit no module keeps them."""
    space = load_space("spaces/minilm-l6-layerwise.yaml")
    torch.manual_seed(0)
    superlm = SuperLM(space.subspace("tiny"), space.dims(), dropout=0.0)
    ids = torch.randint(1, 1000, (2, 16), generator=torch.Generator().manual_seed(1))

    def hidden(low):
        with torch.autocast("cpu", dtype=torch.bfloat16), superlm.low_precision_weights(low):
            return superlm(ids)[0].detach().float()

    first = hidden(torch.bfloat16)
    assert torch.equal(first, hidden(None))
    with torch.no_grad():
        superlm.encoder.layer[0].attention.self.query.weight.mul_(2)
    second = hidden(torch.bfloat16)
    assert torch.equal(second, hidden(None)) and not torch.equal(first, second)
    assert all(m.low_precision is None for m in superlm.modules() if isinstance(m, elastic.ElasticLinear))
