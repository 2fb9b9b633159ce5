"""Measured latency and throughput of model folders (students, teachers, any HF encoder)."""

from pathlib import Path

from transformers import AutoModel

from autodistil_evo.errors import UserError
from autodistil_evo.export.trust import allow_remote_code
from autodistil_evo.supernet.latency import measure_latency


def bench_models(model_dirs, batch=1, seq_len=128, repeats=10, trust_remote_code=False) -> list:
    from autodistil_evo.teacher import resolve_teacher

    rows = []
    for model_dir in model_dirs:
        path = resolve_teacher(model_dir)
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{model_dir}: not a Hugging Face model folder (no config.json)")
        remote_code = allow_remote_code(model_dir, path, trust_remote_code)
        try:
            model = AutoModel.from_pretrained(path, trust_remote_code=remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"{model_dir}: cannot load ({str(e).splitlines()[0]})") from None
        result = measure_latency(model, batch=batch, seq_len=seq_len, repeats=repeats, vocab=model.config.vocab_size)
        rows.append({"model": str(model_dir), "params": sum(p.numel() for p in model.parameters()), **result})
    return rows
