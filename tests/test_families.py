"""Teacher families beyond BERT: a tiny random teacher of each, with a tokenizer built here, goes
through train -> evolve -> export -> reload where the package cannot be imported -> finetune."""

import json

import pytest
import torch
from conftest import tiny_recipe
from helpers import run_cli
from test_export import _reference_outputs, reload_without_package

SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4: pad 1, positions start at 2
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FAMILY_CLASS = {"roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel", "camembert": "CamembertModel",
                "electra": "ElectraModel", "distilbert": "DistilBertModel"}


def make_tokenizer(path, corpus_file, roberta_style: bool, token_types: bool):
    """A small trained tokenizer in the family's style (BPE + <s>/</s>, or WordPiece + [CLS]/[SEP])."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ROBERTA_SPECIALS if roberta_style else BERT_SPECIALS
    if roberta_style:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials)
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials)
    tok.train([str(corpus_file)], trainer)
    first, last = ("<s>", "</s>") if roberta_style else ("[CLS]", "[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}", pair=f"{first} $A {last} {last} $B {last}" if roberta_style else f"{first} $A {last} $B:1 {last}:1",
        special_tokens=[(first, tok.token_to_id(first)), (last, tok.token_to_id(last))])
    names = dict(zip(("bos_token", "pad_token", "eos_token", "unk_token", "mask_token"), ROBERTA_SPECIALS)) if roberta_style \
        else dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), BERT_SPECIALS))
    if roberta_style:
        names.update(cls_token="<s>", sep_token="</s>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=["input_ids", "attention_mask"]
                                   + (["token_type_ids"] if token_types else []), **names)
    fast.save_pretrained(path)
    return fast


def make_family_teacher(path, model_type, corpus_file):
    import transformers

    torch.manual_seed(0)
    roberta_style = model_type in ("roberta", "xlm-roberta", "camembert")
    tokenizer = make_tokenizer(path, corpus_file, roberta_style, token_types=model_type == "electra")
    vocab = len(tokenizer)
    if roberta_style:
        config_class, model_class = {"roberta": ("RobertaConfig", "RobertaModel"),
                                     "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel"),
                                     "camembert": ("CamembertConfig", "CamembertModel")}[model_type]
        config = getattr(transformers, config_class)(vocab_size=vocab, max_position_embeddings=66, type_vocab_size=1,
                                                     pad_token_id=1, bos_token_id=0, eos_token_id=2, **SHAPE)
        model = getattr(transformers, model_class)(config)
    elif model_type == "electra":  # the discriminator, with embeddings narrower than hidden
        config = transformers.ElectraConfig(vocab_size=vocab, embedding_size=32, max_position_embeddings=64, **SHAPE)
        model = transformers.ElectraForPreTraining(config)
    else:
        config = transformers.DistilBertConfig(vocab_size=vocab, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                               max_position_embeddings=64, pad_token_id=0)
        model = transformers.DistilBertModel(config)
    model.save_pretrained(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(FAMILY_CLASS))
def test_family_train_evolve_export_reload_finetune(tmp_path, model_type, corpus_file, tiny_space_file):
    teacher = make_family_teacher(tmp_path / f"teacher-{model_type}", model_type, corpus_file)
    assert "candidates" in run_cli("space", "stats", tiny_space_file, "--teacher", teacher)
    recipe = tiny_recipe(tmp_path / "recipe.yaml", teacher, tiny_space_file, corpus_file, steps=2, save_every=2)
    assert "big" in run_cli("train", "--recipe", recipe, "--out", tmp_path / "unused", "--dry-run")
    run = tmp_path / "run"
    run_cli("train", "--recipe", recipe, "--out", run, "--subspace", "big")
    run_cli("evolve", run, "--out", tmp_path / "search", "--population", 4, "--generations", 1, "--eval-samples", 8)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher)
    batch = tokenizer(["to be or not to be", "the rest is silence, my lord, and more"], padding=True, return_tensors="pt")
    archs = {
        FAMILY_CLASS[model_type]: {"subspace": "big", "layers": 2, "heads": 4, "hidden": 64, "mlp_ratio": 2.0},
        "StudentModel": {"subspace": "big", "layers": 2, "heads": 3, "hidden": 64, "mlp_ratio": 1.5},
    }
    for model_class, arch in archs.items():
        out = tmp_path / model_class
        assert model_class in run_cli("export", run, "--arch", json.dumps(arch), "--out", out)
        hidden = reload_without_package(tmp_path, out, batch["input_ids"], batch["attention_mask"], model_class, classifier=True)
        expected = _reference_outputs(run, arch, batch["input_ids"], batch["attention_mask"])
        assert (hidden - expected)[batch["attention_mask"].bool()].abs().max().item() <= 1e-5
        rows = [json.dumps({"text": f"the play is {w} act {i}", "label": int(w in ("good", "fine"))})
                for i in range(40) for w in ("good", "bad", "fine", "dull")][:80]
        (tmp_path / "task.jsonl").write_text("\n".join(rows) + "\n")
        result = json.loads(run_cli("finetune", out, "--train", tmp_path / "task.jsonl", "--eval", tmp_path / "task.jsonl",
                                    "--max-train", 32, "--json"))
        assert 0.0 <= result["test_accuracy"] <= 1.0


def test_electra_shape_and_cost_follow_its_embedding_projection(tmp_path, corpus_file):
    from autodistil_evo.spaces import Arch, TeacherShape, count_params
    from autodistil_evo.supernet.elastic import build_student, student_config

    teacher = make_family_teacher(tmp_path / "electra", "electra", corpus_file)
    from transformers import AutoConfig

    shape = TeacherShape.from_config("t", AutoConfig.from_pretrained(teacher))
    assert (shape.family, shape.embedding_size, shape.type_vocab_size) == ("electra", 32, 2)
    for arch in (Arch(2, 4, 64, 2.0), Arch(2, 3, 64, 2.0), Arch(1, 2, 32, 2.0)):
        student = build_student(student_config(arch, shape.dims()))
        assert sum(p.numel() for p in student.parameters()) == count_params(arch, shape.dims())


def test_unsupported_model_type_is_one_line(tmp_path, tiny_space_file):
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    out = run_cli("space", "stats", tiny_space_file, "--teacher", folder, expect=2)
    assert "model_type 't5' is not supported; supported teacher families: bert, roberta" in out
    assert len(out.strip().splitlines()) == 1


@pytest.mark.parametrize("model_type", list(FAMILY_CLASS))
def test_hidden_tap_captures_the_tapped_layers_output(tmp_path, model_type, corpus_file):
    """`RelationTap(hidden=True)`, for hidden-state distillation: the same Q/K/V as the plain tap, and the
    tapped layer's output as the whole model computes it, in every family's layout."""
    from autodistil_evo.teacher import RelationTap, load_teacher

    teacher = load_teacher(str(make_family_teacher(tmp_path / f"teacher-{model_type}", model_type, corpus_file)))
    ids = torch.tensor([[3, 14, 15, 9, 26, 5], [3, 35, 8, 9, 4, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        states = teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in (0, -1):
        with RelationTap(teacher.model, layer) as tap:
            qkv = tap(teacher.model, ids, mask)
        with RelationTap(teacher.model, layer, hidden=True) as tap:
            *hidden_qkv, hidden = tap(teacher.model, ids, mask)
        assert all(torch.equal(a, b) for a, b in zip(qkv, hidden_qkv))
        expected = states[layer + 1 if layer >= 0 else layer]
        assert (hidden - expected)[mask.bool()].abs().max().item() <= 1e-5, layer
