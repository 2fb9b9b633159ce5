"""Teacher families: what a student inherits from its teacher's `model_type`.

Every family here is a post-LayerNorm BERT-style encoder; they differ in parameter names, in
embedding conventions and in the Hugging Face class a student can be saved as. The SuperLM and the
self-contained `StudentModel` use BERT's parameter names; one name mapping per family translates
them to the teacher's (to initialise the SuperLM by first-k slicing) and to the family's own class
(to export a student as, e.g., a `RobertaModel`).

Conventions a student follows:
- RoBERTa-style position ids (roberta, xlm-roberta, camembert): padding_idx + 1 + the index among
  non-padding tokens; padding tokens get padding_idx.
- token types: a table of `type_vocab_size` rows (1 for the RoBERTa family), none for DistilBERT.
- ELECTRA: embeddings of `embedding_size` (may differ from hidden) and a projection to hidden.
- pooler: BERT and the RoBERTa family have one; ELECTRA and DistilBERT do not.
"""

from dataclasses import dataclass

from autodistil_evo.errors import UserError

# BERT-style layer module paths -> DistilBERT's.
_DISTILBERT_LAYER = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


def _rename_layer(name: str, source: str, target: str, modules) -> str:
    """`{source}.{i}.{module}.{param}` -> `{target}.{i}.{module'}.{param}` by the (module, module') pairs."""
    index, rest = name[len(source) + 1 :].split(".", 1)
    for old, new in modules:
        if rest.startswith(old + "."):
            rest = new + rest[len(old):]
            break
    return f"{target}.{index}.{rest}"


@dataclass(frozen=True)
class Family:
    model_type: str
    config_class: str  # transformers class names, imported where needed
    model_class: str
    roberta_positions: bool = False
    token_types: bool = True
    pooler: bool = True
    factorized_embeddings: bool = False  # ELECTRA: embedding_size and a projection to hidden
    layers: str = "encoder.layer"  # where the layers live in the family's own model
    qkv: tuple = ("attention.self.query", "attention.self.key", "attention.self.value")
    layer_names: tuple = ()  # (BERT-style layer module path, the family's), where they differ

    def own_name(self, name: str) -> str | None:
        """A BERT-style parameter name -> this family's (None: the family has no such parameter)."""
        if name.startswith("pooler.") and not self.pooler:
            return None
        if name.startswith("embeddings.token_type_embeddings.") and not self.token_types:
            return None
        if name.startswith("encoder.layer."):
            return _rename_layer(name, "encoder.layer", self.layers, self.layer_names)
        return name

    def bert_name(self, name: str) -> str:
        """This family's parameter name -> the BERT-style one (the inverse of `own_name`)."""
        if name.startswith(self.layers + "."):
            return _rename_layer(name, self.layers, "encoder.layer", [(own, bert) for bert, own in self.layer_names])
        return name

    def qkv_paths(self, layer: int) -> list:
        return [f"{self.layers}.{layer}.{part}" for part in self.qkv]


FAMILIES = {
    family.model_type: family
    for family in (
        Family("bert", "BertConfig", "BertModel"),
        Family("roberta", "RobertaConfig", "RobertaModel", roberta_positions=True),
        Family("xlm-roberta", "XLMRobertaConfig", "XLMRobertaModel", roberta_positions=True),
        Family("camembert", "CamembertConfig", "CamembertModel", roberta_positions=True),
        Family("electra", "ElectraConfig", "ElectraModel", pooler=False, factorized_embeddings=True),
        Family("distilbert", "DistilBertConfig", "DistilBertModel", token_types=False, pooler=False,
               layers="transformer.layer",
               qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
               layer_names=tuple(_DISTILBERT_LAYER.items())),
    )
}


def family(model_type, where: str = "teacher") -> Family:
    if model_type not in FAMILIES:
        raise UserError(f"{where}: model_type {model_type!r} is not supported; supported teacher families: "
                        f"{', '.join(FAMILIES)}")
    return FAMILIES[model_type]
