"""A BERT-compatible student encoder whose Q/K/V width may differ from its hidden size.

AutoDistil's search spaces let `heads x head_dim` differ from `hidden`, which
`transformers.BertModel` cannot express (it derives the head size from hidden / heads).
This file defines the smallest change to BERT that can: a `head_dim` field in the config.
Parameter names follow `BertModel` exactly, so a student whose Q/K/V width equals its
hidden size loads into `BertModel` unchanged.

Students of other teacher families carry the family's embedding conventions in the config:
`roberta_positions` (RoBERTa / XLM-R / CamemBERT position ids past the padding index),
`type_vocab_size` 0 (DistilBERT: no token types), `embedding_size` (ELECTRA: embeddings of that
width and a projection to hidden), `use_pooler` (ELECTRA and DistilBERT have none).

Heterogeneous students (each layer with its own heads and FFN size, as OpenELM's per-layer head
counts or Gemma3n's per-layer `intermediate_size`) keep `num_attention_heads` and
`intermediate_size` as lists of one value per layer; an int means every layer.

The file is self-contained (imports only torch and transformers) because exported student
folders ship a copy of it for `trust_remote_code=True` loading without autodistil-evo.
"""

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput


class StudentConfig(PretrainedConfig):
    model_type = "autodistil_student"

    def __init__(
        self,
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        head_dim=32,
        intermediate_size=1536,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        classifier_dropout=None,
        roberta_positions=False,
        embedding_size=None,
        use_pooler=True,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.roberta_positions = roberta_positions
        self.embedding_size = embedding_size  # None: embeddings are hidden_size wide, no projection
        self.use_pooler = use_pooler

    def _of_layer(self, value, index):
        return value[index] if isinstance(value, (list, tuple)) else value

    def layer_heads(self, index: int) -> int:
        return self._of_layer(self.num_attention_heads, index)

    def layer_intermediate_size(self, index: int) -> int:
        return self._of_layer(self.intermediate_size, index)


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, seq] 1/0 mask -> additive [batch, 1, 1, seq] mask, as BERT's eager attention uses."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


def multi_head_attention(q, k, v, additive_mask, head_dim, dropout_p, training):
    """Scaled dot-product attention over heads of `head_dim`; q/k/v are [batch, seq, heads*head_dim].

    Through torch's `scaled_dot_product_attention`, as Transformers' BERT (its fused flash /
    memory-efficient kernels where the device has them; dropout on the attention weights inside it)."""
    batch, seq, width = q.shape
    shape = (batch, seq, width // head_dim, head_dim)
    q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
    context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask,
                                                         dropout_p=dropout_p if training else 0.0)
    return context.transpose(1, 2).reshape(batch, seq, width)


def position_ids(input_ids, padding_idx, roberta_positions: bool):
    """0..seq-1 (BERT), or RoBERTa's: padding_idx + 1 + index among non-padding tokens, padding_idx on padding."""
    if roberta_positions:
        mask = input_ids.ne(padding_idx).int()
        return (torch.cumsum(mask, dim=1) * mask).long() + padding_idx
    return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]


class StudentEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.padding_idx, self.roberta_positions = config.pad_token_id, config.roberta_positions
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        embeddings = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids(input_ids, self.padding_idx, self.roberta_positions))
        return self.dropout(self.LayerNorm(embeddings))


class StudentSelfAttention(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        width = config.layer_heads(index) * config.head_dim
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, width)
        self.key = nn.Linear(config.hidden_size, width)
        self.value = nn.Linear(config.hidden_size, width)
        self.dropout_p = config.attention_probs_dropout_prob


class StudentAttentionOutput(nn.Module):
    def __init__(self, config, in_features):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class StudentAttention(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        self.self = StudentSelfAttention(config, index)
        self.output = StudentAttentionOutput(config, config.layer_heads(index) * config.head_dim)


class StudentIntermediate(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.layer_intermediate_size(index))
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.act(self.dense(hidden_states))


class StudentLayer(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        self.attention = StudentAttention(config, index)
        self.intermediate = StudentIntermediate(config, index)
        self.output = StudentAttentionOutput(config, config.layer_intermediate_size(index))

    def forward(self, hidden_states, additive_mask):
        attn = self.attention.self
        q, k, v = attn.query(hidden_states), attn.key(hidden_states), attn.value(hidden_states)
        context = multi_head_attention(q, k, v, additive_mask, attn.head_dim, attn.dropout_p, self.training)
        hidden_states = self.attention.output(context, hidden_states)
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states)
        return hidden_states, (q, k, v)


class StudentPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))


class StudentPreTrainedModel(PreTrainedModel):
    config_class = StudentConfig
    base_model_prefix = "bert"

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class StudentModel(StudentPreTrainedModel):
    """BERT encoder with `num_attention_heads x head_dim` Q/K/V width independent of hidden size."""

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = StudentEmbeddings(config)
        if config.embedding_size:  # ELECTRA's name and place for it
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(StudentLayer(config, i) for i in range(config.num_hidden_layers))
        self.pooler = StudentPooler(config) if add_pooling_layer and config.use_pooler else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None):
        """`BertModel.forward`'s signature; what this encoder cannot do is refused, never ignored."""
        _refuse_unsupported(position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions)
        if input_ids is None:
            raise ValueError("StudentModel needs input_ids")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden_states = self.embeddings(input_ids, token_type_ids)
        if self.config.embedding_size:
            hidden_states = self.embeddings_project(hidden_states)
        additive_mask = extended_attention_mask(attention_mask, hidden_states.dtype)
        all_hidden = [hidden_states] if output_hidden_states else None
        for layer in self.encoder.layer:
            hidden_states, _ = layer(hidden_states, additive_mask)
            if output_hidden_states:
                all_hidden.append(hidden_states)
        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        all_hidden = tuple(all_hidden) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (hidden_states, pooled, all_hidden) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden)


def _refuse_unsupported(**arguments):
    given = [name for name, value in arguments.items() if value is not None and value is not False]
    if given:
        raise ValueError(f"StudentModel does not support {', '.join(given)}")


class StudentForSequenceClassification(StudentPreTrainedModel):
    """Same head layout as `BertForSequenceClassification` (pooler -> dropout -> linear)."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = StudentModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None, return_dict=None):
        """As `BertForSequenceClassification.forward`: the loss follows `config.problem_type`, which is
        inferred on first use from num_labels and the labels' dtype (regression: MSE, single-label:
        cross-entropy, multi-label: BCE with logits)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            return_dict=True)
        # Families without a pooler (ELECTRA, DistilBERT): the first token's hidden state.
        pooled = outputs.pooler_output if outputs.pooler_output is not None else outputs.last_hidden_state[:, 0]
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = nn.functional.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype)) if self.num_labels == 1 \
                    else nn.functional.mse_loss(logits, labels.to(logits.dtype))
            elif self.config.problem_type == "single_label_classification":
                loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        if not return_dict:
            rest = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + rest) if loss is not None else rest
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
