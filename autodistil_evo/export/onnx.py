"""ONNX export of a model folder this project writes, checked by onnxruntime before it is put in place.

`export_onnx` writes `model.onnx` (dynamic batch and sequence axes; inputs `input_ids`,
`attention_mask` and `token_type_ids` where the model has token types; output
`last_hidden_state`, or `logits` for a classifier), the tokenizer and config beside it, and
compares onnxruntime with PyTorch on held-out review text at two batch sizes and two sequence
lengths. `--quantize int8` adds `model.int8.onnx` (onnxruntime dynamic quantisation). The
packages are the optional extra `autodistil-evo[onnx]`.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from autodistil_evo.errors import UserError
from autodistil_evo.export.trust import model_folder
from autodistil_evo.fileio import atomic_dir
from autodistil_evo.supernet.latency import OnnxGraph, require_onnx

TOLERANCE = 1e-4
CHECK_SHAPES = ((1, 16), (4, 64))  # (batch, sequence length) compared with PyTorch
DEFAULT_OPSET = 18


def load_for_export(model_dir, trust_remote_code=False):
    """(model, tokenizer, output name) of a model folder: a classifier where its config says so."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path, remote = model_folder(model_dir, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
        classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        loader = AutoModelForSequenceClassification if classifier else AutoModel
        model = loader.from_pretrained(path, trust_remote_code=remote).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir}: cannot load ({str(e).splitlines()[0]})") from None
    return model, tokenizer, "logits" if classifier else "last_hidden_state", path


def _has_token_types(model) -> bool:
    return (getattr(model.config, "type_vocab_size", 0) or 0) > 0


def check_texts(n: int = 64) -> list:
    """Held-out text for the checks: review snippets of the embedded task's test split."""
    from autodistil_evo.data import sentiment_task

    return [text for text, _ in sentiment_task().test[:n]]


def feeds(tokenizer, texts, seq_len, token_types: bool) -> dict:
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    return {name: batch[name].astype(np.int64) if name in batch else np.zeros_like(batch["input_ids"], dtype=np.int64)
            for name in names}


def max_difference(session, graph, tokenizer, texts, token_types) -> float:
    """Largest |onnxruntime - PyTorch| over CHECK_SHAPES (hidden states at real tokens only)."""
    worst = 0.0
    for batch, seq_len in CHECK_SHAPES:
        inputs = feeds(tokenizer, texts[:batch], seq_len, token_types)
        got = session.run(None, inputs)[0]
        with torch.inference_mode():
            expected = graph(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()
        difference = np.abs(got - expected)
        if graph.output == "last_hidden_state":
            difference = difference[inputs["attention_mask"].astype(bool)]
        worst = max(worst, float(difference.max()))
    return worst


def int8_agreement(fp32, int8, tokenizer, token_types, max_len=64) -> tuple:
    """(agreement of int8 with fp32 predictions, examples) on the embedded task's test split."""
    from autodistil_evo.data import sentiment_task

    texts = [text for text, _ in sentiment_task().test]
    same = 0
    for start in range(0, len(texts), 64):
        inputs = feeds(tokenizer, texts[start : start + 64], max_len, token_types)
        same += int((fp32.run(None, inputs)[0].argmax(-1) == int8.run(None, inputs)[0].argmax(-1)).sum())
    return same / len(texts), len(texts)


def export_onnx(model_dir, out_dir, quantize=None, opset=DEFAULT_OPSET, force=False, trust_remote_code=False, log=print) -> dict:
    require_onnx()
    import onnxruntime

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: output exists and is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(f"{out_dir}: not empty; pass --force to replace it")
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize: unknown '{quantize}' (known: int8)")
    model, tokenizer, output, source = load_for_export(model_dir, trust_remote_code)
    token_types = _has_token_types(model)
    graph = OnnxGraph(model, output, token_types).eval()
    names = graph.input_names()
    texts = check_texts()
    example = {k: torch.from_numpy(v) for k, v in feeds(tokenizer, texts[:2], 24, token_types).items()}

    with atomic_dir(out_dir) as tmp:
        try:
            graph.export(tmp / "model.onnx", example, opset)
        except Exception as e:  # the exporter raises many types; an opset it refuses among them
            raise UserError(f"--opset {opset}: the ONNX exporter refused ({str(e).splitlines()[0][:300]})") from None
        import onnx

        written = next((o.version for o in onnx.load(str(tmp / "model.onnx"), load_external_data=False).opset_import
                        if o.domain in ("", "ai.onnx")), None)
        if written != opset:  # the exporter falls back to its own opset when it cannot convert
            raise UserError(f"--opset {opset}: the ONNX exporter refused it (it could only write opset {written}); "
                            f"nothing written to {out_dir}")
        session = onnxruntime.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
        difference = max_difference(session, graph, tokenizer, texts, token_types)
        log(f"max abs difference, onnxruntime vs PyTorch on held-out text at (batch, seq) {CHECK_SHAPES}: {difference:.2e}")
        if not difference <= TOLERANCE:
            raise UserError(f"ONNX check failed: outputs differ by {difference:.2e} > {TOLERANCE:g}; nothing written to {out_dir}")
        result = {"model": str(model_dir), "output": output, "inputs": names, "opset": opset, "max_abs_diff": difference}
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(tmp / "model.onnx"), str(tmp / "model.int8.onnx"), weight_type=QuantType.QInt8)
            int8 = onnxruntime.InferenceSession(str(tmp / "model.int8.onnx"), providers=["CPUExecutionProvider"])
            result["int8_max_abs_diff"] = max_difference(int8, graph, tokenizer, texts, token_types)
            log(f"int8: max abs difference vs PyTorch {result['int8_max_abs_diff']:.2e}")
            if output == "logits":
                result["int8_agreement"], examples = int8_agreement(session, int8, tokenizer, token_types)
                log(f"int8: predictions agree with fp32 on {result['int8_agreement']:.1%} of {examples} test examples")
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        for code_file in Path(source).glob("*.py"):  # the config's auto_map needs its (our, checked) model file
            shutil.copy(code_file, tmp / code_file.name)
        (tmp / "autodistil_onnx.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
