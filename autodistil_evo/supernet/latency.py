"""Measured forward latency: the median (p50) and p90 of timed repeats after warm-up, in PyTorch or
in onnxruntime (the model exported to ONNX first)."""

import os
import statistics
import tempfile
import time

import numpy as np
import torch


def time_calls(run, repeats: int = 10, warmup: int = 2) -> dict:
    """p50 / p90 milliseconds of `run()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"latency_ms": statistics.median(times) * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3, "repeats": repeats}


@torch.inference_mode()
def measure_latency(model, batch: int = 1, seq_len: int = 128, repeats: int = 10, warmup: int = 2, vocab: int = 1000) -> dict:
    model.eval()
    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    ids = ids.to(next(model.parameters()).device)
    mask = torch.ones_like(ids)
    timing = time_calls(lambda: model(input_ids=ids, attention_mask=mask), repeats, warmup)
    return {
        **timing,
        "throughput_seq_per_s": batch / (timing["latency_ms"] / 1e3),
        "batch": batch,
        "seq_len": seq_len,
        "threads": torch.get_num_threads(),
    }


def require_onnx():
    """The optional extra `autodistil-evo[onnx]`, or one line saying how to install it."""
    from autodistil_evo.errors import UserError

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(f"ONNX support needs the extra: pip install 'autodistil-evo[onnx]' ({e.name} is missing)") from None


class OnnxGraph(torch.nn.Module):
    """A model with named tensor inputs and one tensor output, as an ONNX graph has them."""

    def __init__(self, model, output: str = "last_hidden_state", token_types: bool = True):
        super().__init__()
        self.model, self.output, self.token_types = model, output, token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"token_type_ids": token_type_ids} if self.token_types else {}
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs), self.output)

    def input_names(self) -> list:
        return ["input_ids", "attention_mask"] + (["token_type_ids"] if self.token_types else [])

    def export(self, path, example: dict, opset: int = 18):
        """ONNX with dynamic batch and sequence axes (PyTorch's dynamo exporter)."""
        names = self.input_names()
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        torch.onnx.export(
            self.eval(), tuple(example[n] for n in names), str(path), dynamo=True, opset_version=opset,
            input_names=names, output_names=[self.output], dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
            external_data=False, verbose=False,
        )


def session_latency(onnx_file, batch: int = 1, seq_len: int = 128, repeats: int = 10, vocab: int = 1000) -> dict:
    """p50 / p90 of an onnxruntime CPU session on random ids of shape (batch, seq_len)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, vocab, (batch, seq_len), dtype=np.int64)
    inputs = {i.name: (ids if i.name == "input_ids" else np.ones_like(ids) if i.name == "attention_mask" else np.zeros_like(ids))
              for i in session.get_inputs()}
    timing = time_calls(lambda: session.run(None, inputs), repeats)
    return {**timing, "throughput_seq_per_s": batch / (timing["latency_ms"] / 1e3), "batch": batch, "seq_len": seq_len,
            "threads": session.get_session_options().intra_op_num_threads or torch.get_num_threads()}


def onnx_latency(model, batch: int = 1, seq_len: int = 128, repeats: int = 10, vocab: int = 1000) -> dict:
    """`model` exported to a temporary ONNX file and timed in onnxruntime (the runtime it is served in)."""
    graph = OnnxGraph(model, token_types=(getattr(model.config, "type_vocab_size", 0) or 0) > 0)
    ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    with tempfile.TemporaryDirectory(prefix="autodistil-evo-latency-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        graph.export(path, example)
        return session_latency(path, batch, seq_len, repeats, vocab)


def latency(model, runtime: str = "torch", **kwargs) -> dict:
    """Latency of `model` in `runtime` (torch or onnxruntime)."""
    return onnx_latency(model, **kwargs) if runtime == "onnxruntime" else measure_latency(model, **kwargs)
