"""Measured forward latency: the median (p50) and p90 of timed repeats after warm-up."""

import statistics
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
