"""Measured forward latency: the median (p50) and p90 of timed repeats after warm-up, in PyTorch or
in onnxruntime (the model exported to ONNX first)."""

import os
import statistics
import tempfile
import time

import numpy as np
import torch

DEVICES = ("cpu", "cuda")


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """The torch device a latency is measured on; one line where it is unknown or absent here."""
    from autodistil_evo.errors import UserError

    if name not in DEVICES:
        raise UserError(f"{flag}: unknown '{name}' (known: {', '.join(DEVICES)})")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{flag} cuda: no CUDA device on this machine; measure on the GPU you serve from, or use cpu")
    return torch.device(name)


def time_calls(run, repeats: int = 10, warmup: int = 2, device="cpu") -> dict:
    """p50 / p90 milliseconds of `run()` over `repeats` calls after `warmup` untimed ones. On CUDA each call
    is timed by device events around it (kernels run asynchronously; the host clock would time the launch)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return {"latency_ms": statistics.median(times) * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3, "repeats": repeats}


@torch.inference_mode()
def measure_latency(model, batch: int = 1, seq_len: int = 128, repeats: int = 10, warmup: int = 2, vocab: int = 1000,
                    device: str = "cpu") -> dict:
    """Forward latency of `model` on `device` (the model is moved there) on random ids of (batch, seq_len)."""
    where = resolve_device(device)
    model = model.eval().to(where)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0)).to(where)
    mask = torch.ones_like(ids)
    timing = time_calls(lambda: model(input_ids=ids, attention_mask=mask), repeats, warmup, where)
    return {
        **timing,
        "throughput_seq_per_s": batch / (timing["latency_ms"] / 1e3),
        "batch": batch,
        "seq_len": seq_len,
        "device": torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu",
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


def latency(model, runtime: str = "torch", device: str = "cpu", **kwargs) -> dict:
    """Latency of `model` in `runtime` (torch on `device`, or onnxruntime on the CPU)."""
    return onnx_latency(model, **kwargs) if runtime == "onnxruntime" else measure_latency(model, device=device, **kwargs)
