"""GPU scale: the SuperLM training step at the paper's batch against a plain Transformers training step.

A BERT-base-shaped teacher built from its config with random weights (throughput does not depend on
the weights), `spaces/autodistil-bert-base.yaml`'s `base` sub-space, sequence 128, micro-batches 32,
64 and 128, fp32 and bf16. Per row: the trainer's own `distill_step` on its DeepSpeed engine
(tokens/s of the batch, subnet-tokens/s = tokens x sandwich members, peak memory, MFU = the step's
training FLOPs as the trainer counts them over the peak this script measures for a large bf16 matrix
product on the device); beside it, as the reference, a Transformers `BertModel` of the SuperLM's
largest subnet (the teacher's shape where BertModel cannot express that subnet's Q/K/V width) trained
with SDPA attention, fused AdamW and the same precision (bf16: autocast over fp32 weights). `--tiny` runs the same code at toy sizes on the CPU (a test does), so it cannot rot
between GPU runs. Writes benchmarks/results/gpu_scale.json and the *GPU scale* section.
"""

import argparse
import statistics
import time

import torch
from common import REPO
from report import command, machine, markdown_table, write_results, write_section

from autodistil_evo.distill.recipe import parse_recipe
from autodistil_evo.distill.trainer import distill_step, make_engine, sandwich, sandwich_size, step_flops, teacher_tap_flops
from autodistil_evo.distributed import device, init_distributed
from autodistil_evo.spaces import load_space
from autodistil_evo.spaces.space import parse_space
from autodistil_evo.supernet import SuperLM
from autodistil_evo.teacher import RelationTap

BERT_BASE = {"layers": 12, "hidden": 768, "heads": 12, "head_dim": 64, "ffn": 3072, "vocab_size": 30522,
             "max_position_embeddings": 512, "type_vocab_size": 2}
TINY = {"layers": 2, "hidden": 64, "heads": 4, "head_dim": 16, "ffn": 128, "vocab_size": 1000,
        "max_position_embeddings": 64, "type_vocab_size": 2}
TINY_SPACE = {"name": "tiny", "head_dim": 16, "seq_len": 16,
              "subspaces": {"base": {"layers": [1, 2], "heads": [2, 4], "hidden": [32, 64], "mlp_ratio": [1.0, 2.0]}}}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_matmul_tflops(size: int, seconds: float = 2.0) -> float:
    """bf16 matrix-product TFLOP/s of this device (square `size` matrices, after warm-up)."""
    a = torch.randn(size, size, device=device(), dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        count += 1
    sync()
    return count * 2 * size**3 / (time.perf_counter() - start) / 1e12


def teacher_model(shape: dict, dtype):
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=shape["hidden"], num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                        intermediate_size=shape["ffn"], vocab_size=shape["vocab_size"],
                        max_position_embeddings=shape["max_position_embeddings"], attn_implementation="sdpa")
    return BertModel(config).to(device(), dtype=dtype).eval()


def timed(step, steps: int) -> float:
    """Median seconds of `step()` over `steps` calls after 2 warm-up."""
    times = []
    for i in range(steps + 2):
        sync()
        start = time.perf_counter()
        step(i)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def superlm_row(recipe, space, subspace, teacher, steps: int, profile: bool = False) -> dict:
    superlm = SuperLM(subspace, space.dims(recipe.teacher_shape()), dropout=recipe.dropout)
    superlm.init_from_teacher(teacher.state_dict(), recipe.teacher_shape().layers)
    members = sandwich_size(subspace, recipe.sandwich_random)
    engine = make_engine(recipe, superlm, members, 1000)
    engine.train()
    batch = torch.randint(0, recipe.teacher_shape().vocab_size, (recipe.micro_batch, recipe.seq_len), device=device())
    flops = []
    with RelationTap(teacher, recipe.teacher_layer) as tap:
        def step(i):
            archs = sandwich(subspace, 0, i, recipe.sandwich_random)
            distill_step(engine, superlm, archs, [batch], teacher, tap, recipe.relation_heads).tolist()  # syncs
            flops.append(step_flops(archs, space.dims(recipe.teacher_shape()),
                                    teacher_tap_flops(recipe.teacher_shape(), recipe.teacher_layer, recipe.seq_len),
                                    recipe.seq_len, recipe.micro_batch))

        seconds = timed(step, steps)
        if profile:  # where a step's time goes: the top operators by self CPU and by device time
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            cuda = torch.cuda.is_available()
            with torch_profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
                for i in range(3):
                    step(steps + 2 + i)
                sync()
            for key in ["self_cpu_time_total", *(["self_device_time_total"] if cuda else [])]:
                print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)
    return {"seconds": seconds, "members": members, "flops_per_step": statistics.median(flops[2:])}


def reference_row(recipe, space, subspace, steps: int) -> dict:
    """A Transformers BertModel of the sub-space's largest arch (else the teacher's shape): forward, a loss, backward, fused AdamW."""
    from transformers import BertConfig, BertModel

    largest, dims, teacher = subspace.largest(), space.dims(recipe.teacher_shape()), recipe.teacher_shape()
    # Where Q/K/V width differs from hidden, which BertModel cannot express: the teacher's own shape instead.
    shape, name = (largest, largest.key()) if largest.heads * dims.head_dim == largest.hidden else (teacher, "teacher")
    config = BertConfig(hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                        intermediate_size=shape.ffn, vocab_size=dims.vocab_size,
                        max_position_embeddings=dims.max_position_embeddings, attn_implementation="sdpa")
    model = BertModel(config).to(device()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = torch.randint(0, dims.vocab_size, (recipe.micro_batch, recipe.seq_len), device=device())
    autocast = torch.autocast(device().type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16")

    def step(_):
        with autocast:
            loss = model(input_ids=batch).last_hidden_state.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"seconds": timed(step, steps), "shape": name}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="toy sizes on any device (the CPU test)")
    parser.add_argument("--micro-batches", default="32,64,128")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row, after 2 warm-up")
    parser.add_argument("--section", default="gpu_scale")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table of 3 SuperLM steps per row")
    args = parser.parse_args()
    init_distributed()
    shape = TINY if args.tiny else BERT_BASE
    space = parse_space(TINY_SPACE) if args.tiny else load_space("autodistil-bert-base")
    subspace = space.subspace("base")
    seq_len = 16 if args.tiny else 128
    peak = peak_matmul_tflops(256 if args.tiny else 8192, 0.2 if args.tiny else 2.0)
    rows = []
    for precision in args.precisions.split(","):
        for micro_batch in (int(b) for b in args.micro_batches.split(",")):
            recipe = parse_recipe({"teacher": {"name": "bert-base-shaped, random", **shape}, "space": "-",
                                   "deepspeed": str(REPO / "recipes" / "deepspeed.json"), "seq_len": seq_len, "micro_batch": micro_batch,
                                   "precision": precision, "relation_heads": shape["heads"], "lr": 1e-4}, "gpu_scale")
            teacher = teacher_model(shape, recipe.dtype)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            superlm = superlm_row(recipe, space, subspace, teacher, args.steps, args.profile)
            memory = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
            del teacher
            reference = reference_row(recipe, space, subspace, args.steps)
            tokens = micro_batch * seq_len
            rows.append({
                "precision": precision, "micro_batch": micro_batch, "seq_len": seq_len, "sandwich": superlm["members"],
                "superlm_step_ms": superlm["seconds"] * 1e3,
                "superlm_tokens_per_s": tokens / superlm["seconds"],
                "superlm_subnet_tokens_per_s": superlm["members"] * tokens / superlm["seconds"],
                "reference": reference["shape"], "reference_tokens_per_s": tokens / reference["seconds"],
                "mfu": superlm["flops_per_step"] / superlm["seconds"] / (peak * 1e12),
                "peak_memory_gb": memory,
            })
            print(rows[-1], flush=True)
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    write_results(args.section, {"device": where, "peak_matmul_tflops": peak, "tiny": args.tiny,
                                 "teacher": "bert-base-shaped, random weights" if not args.tiny else "tiny", "rows": rows})
    table = markdown_table(
        ["precision", "micro-batch", "SuperLM step ms", "SuperLM tokens/s", "subnet-tokens/s", "reference tokens/s",
         "subnet-tokens/s / reference", "MFU", "peak GB"],
        [(r["precision"], r["micro_batch"], f"{r['superlm_step_ms']:.0f}", f"{r['superlm_tokens_per_s']:.0f}",
          f"{r['superlm_subnet_tokens_per_s']:.0f}", f"{r['reference_tokens_per_s']:.0f}",
          f"{r['superlm_subnet_tokens_per_s'] / r['reference_tokens_per_s']:.2f}", f"{r['mfu']:.1%}",
          "-" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f}") for r in rows])
    write_section(args.section, (
        f"## GPU scale\n\nMachine: {machine()}. {'Toy sizes (--tiny). ' if args.tiny else ''}BERT-base-shaped teacher "
        f"(random weights), `{space.name}` sub-space `base`, sequence {seq_len}, sandwich of {rows[0]['sandwich']}; "
        f"reference: a Transformers `BertModel` of shape `{rows[0]['reference']}` (the sub-space's largest arch where "
        f"BertModel can express it, else the teacher's; SDPA, fused AdamW, same precision). "
        f"MFU: the step's training FLOPs (teacher forward + 3x each member's forward) over the measured bf16 matrix-product "
        f"peak, {peak:.3g} TFLOP/s.\n\nCommand: `{command()}`\n\n{table}\n"))


if __name__ == "__main__":
    main()
