"""Measured latency and throughput of model folders (students, teachers, any HF encoder), in PyTorch
or in onnxruntime (folders written by `autodistil-evo onnx`, their int8 file too)."""

import json
from pathlib import Path

import numpy as np
from transformers import AutoModel

from autodistil_evo.errors import UserError
from autodistil_evo.export.trust import model_folder
from autodistil_evo.supernet.latency import measure_latency, require_onnx, resolve_device, session_latency

RUNTIMES = ("torch", "onnxruntime")


PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _torch_row(model_dir, batch, seq_len, repeats, trust_remote_code, precision="fp32", device="cpu") -> dict:
    import torch

    path, remote_code = model_folder(model_dir, trust_remote_code)
    try:
        model = AutoModel.from_pretrained(path, trust_remote_code=remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir}: cannot load ({str(e).splitlines()[0]})") from None
    model = model.to(getattr(torch, PRECISIONS[precision]))
    result = measure_latency(model, batch=batch, seq_len=seq_len, repeats=repeats, vocab=model.config.vocab_size, device=device)
    return {"model": str(model_dir), "runtime": "torch", "precision": precision, "params": sum(p.numel() for p in model.parameters()), **result}


def _onnx_rows(model_dir, batch, seq_len, repeats) -> list:
    require_onnx()
    folder = Path(model_dir)
    if not (folder / "model.onnx").is_file():
        raise UserError(f"{model_dir}: no model.onnx; write one with `autodistil-evo onnx {model_dir} --out DIR` and bench DIR")
    vocab = json.loads((folder / "config.json").read_text()).get("vocab_size", 1000) if (folder / "config.json").is_file() else 1000
    rows = []
    for name in ("model.onnx", "model.int8.onnx"):
        if (folder / name).is_file():
            import onnx

            params = sum(int(np.prod(t.dims)) for t in onnx.load(str(folder / name), load_external_data=False).graph.initializer)
            rows.append({"model": f"{model_dir}/{name}", "runtime": "onnxruntime", "params": params, "device": "cpu",
                         **session_latency(folder / name, batch, seq_len, repeats, vocab)})
    return rows


def bench_models(model_dirs, batch=1, seq_len=128, repeats=10, trust_remote_code=False, runtime="torch",
                 precision="fp32", device="cpu") -> list:
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime: unknown '{runtime}' (known: {', '.join(RUNTIMES)})")
    if precision != "fp32" and runtime != "torch":
        raise UserError(f"--precision {precision}: only with --runtime torch (ONNX files carry their own dtype)")
    resolve_device(device)
    if device != "cpu" and runtime != "torch":
        raise UserError(f"--device {device}: only with --runtime torch (onnxruntime runs on the CPU here)")
    rows = []
    for model_dir in model_dirs:
        if runtime == "torch":
            rows.append(_torch_row(model_dir, batch, seq_len, repeats, trust_remote_code, precision, device))
        else:
            rows += _onnx_rows(model_dir, batch, seq_len, repeats)
    return rows
