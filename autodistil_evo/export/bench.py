"""Measured latency and throughput of model folders (students, teachers, any HF encoder), in PyTorch
or in onnxruntime (folders written by `autodistil-evo onnx`, their int8 file too)."""

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from autodistil_evo.errors import UserError
from autodistil_evo.export.trust import model_folder
from autodistil_evo.supernet.latency import measure_latency, time_calls

RUNTIMES = ("torch", "onnxruntime")


def _torch_row(model_dir, batch, seq_len, repeats, trust_remote_code) -> dict:
    path, remote_code = model_folder(model_dir, trust_remote_code)
    try:
        model = AutoModel.from_pretrained(path, trust_remote_code=remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir}: cannot load ({str(e).splitlines()[0]})") from None
    result = measure_latency(model, batch=batch, seq_len=seq_len, repeats=repeats, vocab=model.config.vocab_size)
    return {"model": str(model_dir), "runtime": "torch", "params": sum(p.numel() for p in model.parameters()), **result}


def session_latency(onnx_file, batch, seq_len, repeats, vocab) -> dict:
    """p50 / p90 of an onnxruntime session on random ids of shape (batch, seq_len)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, vocab, (batch, seq_len), dtype=np.int64)
    inputs = {i.name: (ids if i.name == "input_ids" else np.ones_like(ids) if i.name == "attention_mask" else np.zeros_like(ids))
              for i in session.get_inputs()}
    timing = time_calls(lambda: session.run(None, inputs), repeats)
    return {**timing, "throughput_seq_per_s": batch / (timing["latency_ms"] / 1e3), "batch": batch, "seq_len": seq_len,
            "threads": session.get_session_options().intra_op_num_threads or torch.get_num_threads()}


def _onnx_rows(model_dir, batch, seq_len, repeats) -> list:
    from autodistil_evo.export.onnx import require_onnx

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
            rows.append({"model": f"{model_dir}/{name}", "runtime": "onnxruntime", "params": params,
                         **session_latency(folder / name, batch, seq_len, repeats, vocab)})
    return rows


def bench_models(model_dirs, batch=1, seq_len=128, repeats=10, trust_remote_code=False, runtime="torch") -> list:
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime: unknown '{runtime}' (known: {', '.join(RUNTIMES)})")
    rows = []
    for model_dir in model_dirs:
        if runtime == "torch":
            rows.append(_torch_row(model_dir, batch, seq_len, repeats, trust_remote_code))
        else:
            rows += _onnx_rows(model_dir, batch, seq_len, repeats)
    return rows
