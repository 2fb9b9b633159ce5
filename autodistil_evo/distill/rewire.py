"""Importance-ordered slicing: the teacher's heads and FFN neurons (`rewire`) and its hidden channels
(`order_hidden`) sorted by importance, most important first, before the SuperLM takes its first-k slices
(DynaBERT's network rewiring and Minitron's embedding-channel ranking, without labels).

A subnet then keeps each layer's most useful heads and neurons rather than its first ones. The
permutation is function-preserving: Q, K and V rows move in head blocks with the attention output's
columns, FFN rows with the FFN output's columns, so the rewired teacher computes what the teacher
does (tested). The tapped layer's heads keep their order, so that the student's relation heads pair
with the teacher's as under first-k slicing. Importance is task-agnostic, measured on training text: a head's is the mean norm
of its contribution to the attention output (its context through its slice of the output
projection), a neuron's the mean magnitude of its activation times the norm of its output
weights. Both are first-order estimates of what removing it changes in the layer's output.

Hidden channels (the residual stream, Minitron's "embedding channels") are ranked by the mean
magnitude of every layer's LayerNorm outputs on them, and permuted together in every weight that
reads or writes the stream: embedding columns, LayerNorms, Q/K/V and FFN input columns, attention
and FFN output rows, the pooler. LayerNorm is permutation-equivariant, so the permuted teacher
computes the teacher's hidden states with their channels in that order (tested); pooled embeddings
and their cosine similarities are unchanged. A rotation of the stream (SliceGPT) would not keep
the function here: BERT's LayerNorm subtracts a mean and scales each channel by its own weight.
"""

from dataclasses import dataclass

import torch

from autodistil_evo.teacher import Teacher

# BERT-style module paths inside a layer; the teacher's family maps them to its own names.
QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
ATTENTION_OUT, FFN_IN, FFN_OUT = "attention.output.dense", "intermediate.dense", "output.dense"
ATTENTION_NORM, FFN_NORM = "attention.output.LayerNorm", "output.LayerNorm"


def _own(teacher: Teacher, layer: int, module: str) -> str:
    return teacher.family.own_name(f"encoder.layer.{layer}.{module}.weight")[: -len(".weight")]


@dataclass
class Importance:
    layers: list  # per layer: (head scores [heads], neuron scores [ffn])
    hidden: torch.Tensor  # per hidden channel: mean |LayerNorm output| summed over the layers' LayerNorms [hidden]


@torch.no_grad()
def importance(teacher: Teacher, blocks: torch.Tensor, batch_size: int = 16) -> Importance:
    """Head, neuron and hidden-channel scores averaged over the non-padding tokens of `blocks`."""
    model, shape = teacher.model, teacher.shape
    inputs, handles = {}, []
    for layer in range(shape.layers):
        for module in (ATTENTION_OUT, FFN_OUT):
            def keep(_m, args, _out, key=(layer, module)):
                inputs[key] = args[0].detach()
            handles.append(model.get_submodule(_own(teacher, layer, module)).register_forward_hook(keep))
        for module in (ATTENTION_NORM, FFN_NORM):  # the residual stream after each sub-layer
            def keep_output(_m, _args, out, key=(layer, module)):
                inputs[key] = out.detach()
            handles.append(model.get_submodule(_own(teacher, layer, module)).register_forward_hook(keep_output))
    heads = [torch.zeros(shape.heads, dtype=torch.float64) for _ in range(shape.layers)]
    neurons = [torch.zeros(shape.ffn, dtype=torch.float64) for _ in range(shape.layers)]
    hidden = torch.zeros(shape.hidden, dtype=torch.float64)
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
                for module in (ATTENTION_NORM, FFN_NORM):
                    hidden += inputs[(layer, module)][keep].float().abs().sum(0).double()
    finally:
        for handle in handles:
            handle.remove()
    return Importance([(h / tokens, n / tokens) for h, n in zip(heads, neurons)], hidden / tokens)


def rewired_state(teacher: Teacher, scores: Importance, keep_heads: tuple = (), heads_and_ffn: bool = True,
                  hidden: bool = False) -> dict:
    """The teacher's state dict with each layer's heads and FFN neurons (`heads_and_ffn`) and the hidden
    channels (`hidden`) in descending order of `scores`; the layers in `keep_heads` keep their heads' order
    (the tapped layer: its Q/K/V give the relation targets, which are split into relation heads in the
    teacher's own channel order)."""
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    if hidden:
        _permute_hidden(teacher, state, torch.argsort(scores.hidden, descending=True, stable=True))
    if not heads_and_ffn:
        return state
    d = teacher.shape.head_dim
    for layer, (head_scores, neuron_scores) in enumerate(scores.layers):
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


def _permute_hidden(teacher: Teacher, state: dict, order: torch.Tensor):
    """Put the hidden channels of every weight that reads or writes the residual stream in `order`, in place."""
    family = teacher.family

    def permute(bert_name: str, dims: tuple):
        name = family.own_name(bert_name)
        if name is None or name not in state:
            return
        for dim in dims:
            state[name] = state[name].index_select(dim, order)

    if family.factorized_embeddings:  # the embeddings keep their own width; their projection writes the stream
        permute("embeddings_project.weight", (0,))
        permute("embeddings_project.bias", (0,))
    else:
        for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            permute(f"embeddings.{table}.weight", (1,))
        permute("embeddings.LayerNorm.weight", (0,))
        permute("embeddings.LayerNorm.bias", (0,))
    for layer in range(teacher.shape.layers):
        for module in (*QKV, FFN_IN):
            permute(f"encoder.layer.{layer}.{module}.weight", (1,))
        for module in (ATTENTION_OUT, FFN_OUT, ATTENTION_NORM, FFN_NORM):
            permute(f"encoder.layer.{layer}.{module}.weight", (0,))
            permute(f"encoder.layer.{layer}.{module}.bias", (0,))
    permute("pooler.dense.weight", (0, 1))
    permute("pooler.dense.bias", (0,))
