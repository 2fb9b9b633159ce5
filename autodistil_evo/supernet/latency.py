"""Measured forward latency of a model: the median of timed repeats after warm-up."""

import statistics
import time

import torch


@torch.inference_mode()
def measure_latency(model, batch: int = 1, seq_len: int = 128, repeats: int = 10, warmup: int = 2, vocab: int = 1000) -> dict:
    model.eval()
    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    ids = ids.to(next(model.parameters()).device)
    mask = torch.ones_like(ids)
    for _ in range(warmup):
        model(input_ids=ids, attention_mask=mask)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "latency_ms": median * 1e3,
        "throughput_seq_per_s": batch / median,
        "batch": batch,
        "seq_len": seq_len,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }
