"""Importance-ordered slicing: the teacher's heads and FFN neurons sorted by importance, most important
first, before the SuperLM takes its first-k slices (DynaBERT's network rewiring, without labels).

A subnet then keeps each layer's most useful heads and neurons rather than its first ones. The
permutation is function-preserving: Q, K and V rows move in head blocks with the attention output's
columns, FFN rows with the FFN output's columns, so the rewired teacher computes what the teacher
does (tested). The tapped layer's heads keep their order, so that the student's relation heads pair
with the teacher's as under first-k slicing. Importance is task-agnostic, measured on training text: a head's is the mean norm
of its contribution to the attention output (its context through its slice of the output
projection), a neuron's the mean magnitude of its activation times the norm of its output
weights. Both are first-order estimates of what removing it changes in the layer's output.
"""

import torch

from autodistil_evo.teacher import Teacher

# BERT-style module paths inside a layer; the teacher's family maps them to its own names.
QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
ATTENTION_OUT, FFN_IN, FFN_OUT = "attention.output.dense", "intermediate.dense", "output.dense"


def _own(teacher: Teacher, layer: int, module: str) -> str:
    return teacher.family.own_name(f"encoder.layer.{layer}.{module}.weight")[: -len(".weight")]


@torch.no_grad()
def importance(teacher: Teacher, blocks: torch.Tensor, batch_size: int = 16) -> list:
    """Per layer, (head scores [heads], neuron scores [ffn]) averaged over the non-padding tokens of `blocks`."""
    model, shape = teacher.model, teacher.shape
    inputs, handles = {}, []
    for layer in range(shape.layers):
        for module in (ATTENTION_OUT, FFN_OUT):
            def keep(_m, args, _out, key=(layer, module)):
                inputs[key] = args[0].detach()
            handles.append(model.get_submodule(_own(teacher, layer, module)).register_forward_hook(keep))
    heads = [torch.zeros(shape.heads, dtype=torch.float64) for _ in range(shape.layers)]
    neurons = [torch.zeros(shape.ffn, dtype=torch.float64) for _ in range(shape.layers)]
    tokens = 0
    try:
        model.eval()
        for start in range(0, len(blocks), batch_size):
            ids = blocks[start:start + batch_size]
            mask = (ids != (model.config.pad_token_id or 0)).long()
            model(input_ids=ids, attention_mask=mask)
            keep = mask.bool()
            tokens += int(keep.sum())
            for layer in range(shape.layers):
                w_o = model.get_submodule(_own(teacher, layer, ATTENTION_OUT)).weight.float()  # [hidden, heads*head_dim]
                context = inputs[(layer, ATTENTION_OUT)][keep].float()  # [tokens, heads*head_dim]
                for h in range(shape.heads):
                    part = slice(h * shape.head_dim, (h + 1) * shape.head_dim)
                    heads[layer][h] += (context[:, part] @ w_o[:, part].T).norm(dim=-1).sum().double()
                w_out = model.get_submodule(_own(teacher, layer, FFN_OUT)).weight.float()  # [hidden, ffn]
                acts = inputs[(layer, FFN_OUT)][keep].float()  # [tokens, ffn]
                neurons[layer] += (acts.abs().sum(0) * w_out.norm(dim=0)).double()
    finally:
        for handle in handles:
            handle.remove()
    return [(h / tokens, n / tokens) for h, n in zip(heads, neurons)]


def rewired_state(teacher: Teacher, scores: list, keep_heads: tuple = ()) -> dict:
    """The teacher's state dict with each layer's heads and FFN neurons in descending order of `scores`;
    the layers in `keep_heads` keep their heads' order (the tapped layer: its Q/K/V give the relation
    targets, which are split into relation heads in the teacher's own channel order)."""
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = teacher.shape.head_dim
    for layer, (head_scores, neuron_scores) in enumerate(scores):
        head_order = torch.arange(len(head_scores)) if layer in keep_heads else \
            torch.argsort(head_scores, descending=True, stable=True)
        rows = torch.cat([torch.arange(h * d, (h + 1) * d) for h in head_order.tolist()])
        for module in QKV:
            name = _own(teacher, layer, module)
            state[f"{name}.weight"] = state[f"{name}.weight"][rows]
            state[f"{name}.bias"] = state[f"{name}.bias"][rows]
        name = _own(teacher, layer, ATTENTION_OUT)
        state[f"{name}.weight"] = state[f"{name}.weight"][:, rows]
        order = torch.argsort(neuron_scores, descending=True, stable=True)
        name = _own(teacher, layer, FFN_IN)
        state[f"{name}.weight"], state[f"{name}.bias"] = state[f"{name}.weight"][order], state[f"{name}.bias"][order]
        name = _own(teacher, layer, FFN_OUT)
        state[f"{name}.weight"] = state[f"{name}.weight"][:, order]
    return state
