"""Importance-ordered slicing (`rewire: true`): function-preserving, most important parts first."""

import json

import torch
from conftest import tiny_recipe
from helpers import run_cli
from safetensors.torch import load_file

from autodistil_evo.distill.rewire import importance, rewired_state
from autodistil_evo.teacher import load_teacher


def blocks(n=8, length=32, seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(5, 1000, (n, length))
    ids[:, 0] = 2
    return ids


def test_rewired_teacher_computes_the_same_with_its_parts_in_importance_order(tiny_teacher):
    teacher = load_teacher(str(tiny_teacher))
    ids, mask = blocks(), torch.ones(8, 32, dtype=torch.long)
    scores = importance(teacher, ids)
    assert [(len(h), len(n)) for h, n in scores.layers] == [(4, 128), (4, 128)]
    assert all(len(set(h.tolist())) == 4 for h, _ in scores.layers)  # heads tell apart
    with torch.no_grad():
        before = teacher.model(input_ids=ids, attention_mask=mask).last_hidden_state
        teacher.model.load_state_dict(rewired_state(teacher, scores))
        after = teacher.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (after - before).abs().max().item() <= 1e-5
    for heads, neurons in importance(teacher, ids).layers:  # measured again on the rewired teacher: sorted
        assert torch.all(heads[:-1] >= heads[1:] - 1e-9) and torch.all(neurons[:-1] >= neurons[1:] - 1e-9)


def test_hidden_channels_in_importance_order_keep_the_function(tiny_teacher):
    """Every weight that reads or writes the residual stream is permuted alike: the teacher's hidden states come
    out with their channels in importance order, and first-k hidden slices then keep the most used channels."""
    teacher = load_teacher(str(tiny_teacher))
    ids, mask = blocks(), torch.ones(8, 32, dtype=torch.long)
    scores = importance(teacher, ids)
    order = torch.argsort(scores.hidden, descending=True, stable=True)
    assert scores.hidden.shape == (64,) and not torch.equal(order, torch.arange(64))
    with torch.no_grad():
        before = teacher.model(input_ids=ids, attention_mask=mask)
        teacher.model.load_state_dict(rewired_state(teacher, scores, heads_and_ffn=False, hidden=True))
        after = teacher.model(input_ids=ids, attention_mask=mask)
    assert (after.last_hidden_state - before.last_hidden_state[..., order]).abs().max().item() <= 1e-5
    assert (after.pooler_output - before.pooler_output[..., order]).abs().max().item() <= 1e-5
    again = importance(teacher, ids).hidden  # measured on the permuted teacher: sorted
    assert torch.all(again[:-1] >= again[1:] - 1e-9)


def test_order_hidden_run_equals_the_teacher_at_full_width_and_exports(tmp_path, tiny_teacher, tiny_space_file,
                                                                      corpus_file):
    """At step 0 the SuperLM's largest subnet (the teacher's shape) computes the teacher's hidden states under each
    channel order (as sets of channel values per token: the order differs), and so does its export."""
    from transformers import AutoModel

    from autodistil_evo.distill.artifact import load_superlm

    ids, mask = blocks(), torch.ones(8, 32, dtype=torch.long)
    teacher = load_teacher(str(tiny_teacher))
    with torch.no_grad():
        expected = teacher.model(input_ids=ids, attention_mask=mask).last_hidden_state
    for options in ({}, {"order_hidden": True}, {"order_hidden": True, "rewire": True}):
        recipe = tiny_recipe(tmp_path / "r.yaml", tiny_teacher, tiny_space_file, corpus_file, **options)
        run = tmp_path / "-".join(options) / "run"
        run_cli("train", "--recipe", recipe, "--out", run, "--subspace", "big", "--steps", 0)
        trained = load_superlm(run / "big")
        largest = trained.subspace.largest()
        trained.superlm.set_active(largest)
        with torch.no_grad():
            got = trained.superlm(ids, mask)[0]
        assert (got.sort(-1).values - expected.sort(-1).values).abs().max().item() <= 1e-5
        if options:  # the same values per token, in another channel order
            assert (got - expected).abs().max().item() > 1e-3
        else:
            assert (got - expected).abs().max().item() <= 1e-5
        assert json.loads((run / "big" / "superlm.json").read_text())["order_hidden"] is bool(options)
        run_cli("export", run, "--arch", json.dumps({"subspace": "big", **largest.to_dict()}), "--out", run.parent / "s")
        exported = AutoModel.from_pretrained(run.parent / "s", trust_remote_code=True).eval()
        with torch.no_grad():
            out = exported(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (out - got).abs().max().item() <= 1e-5


def test_rewire_run_slices_the_most_important_heads_and_counts_their_cost(tmp_path, tiny_teacher, tiny_space_file,
                                                                           corpus_file):
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_teacher, tiny_space_file, corpus_file, rewire=True)
    run_cli("train", "--recipe", recipe, "--out", tmp_path / "run", "--subspace", "big", "--steps", 0)
    w = load_file(tmp_path / "run" / "big" / "superlm.safetensors")
    teacher = load_teacher(str(tiny_teacher))
    meta = json.loads((tmp_path / "run" / "big" / "superlm.json").read_text())
    assert meta["rewire"] is True and meta["train_flops"] > 0  # the importance pass, before any step
    state = teacher.state_dict()
    tapped = "encoder.layer.1.attention.self.query.weight"  # the last layer gives the relation targets: unchanged
    assert torch.equal(w[tapped], next(v for k, v in state.items() if k.endswith(tapped))[: w[tapped].shape[0], : w[tapped].shape[1]])
    q = next(v for k, v in state.items() if k.endswith("encoder.layer.0.attention.self.query.weight"))
    mine = w["encoder.layer.0.attention.self.query.weight"]
    d = teacher.shape.head_dim
    rows = {tuple(mine[h * d:(h + 1) * d, 0].tolist()) for h in range(4)}
    assert rows == {tuple(q[h * d:(h + 1) * d, 0].tolist()) for h in range(4)}  # the same heads ...
    assert not torch.equal(mine[:, :4], q[: mine.shape[0], :4])  # ... in another order than the teacher's
    # rewire is part of the run's identity; a bad value is one line, exit 2
    run_cli("train", "--recipe", recipe, "--out", tmp_path / "one", "--subspace", "big", "--steps", 1)
    plain = tiny_recipe(tmp_path / "p.yaml", tiny_teacher, tiny_space_file, corpus_file)
    out = run_cli("train", "--recipe", plain, "--out", tmp_path / "one", "--subspace", "big", "--steps", 2, "--resume",
                  expect=2)
    assert "rewire" in out
    bad = tiny_recipe(tmp_path / "bad.yaml", tiny_teacher, tiny_space_file, corpus_file, rewire="yes")
    assert "rewire: 'yes' is not true or false" in run_cli("train", "--recipe", bad, "--out", tmp_path / "x", expect=2)
