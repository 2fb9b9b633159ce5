"""Train-step time (forward + backward) of a subnet inside the SuperLM vs. the same arch standalone.

The standalone model is a plain `transformers.BertModel` where heads x head_dim == hidden, else the
package's StudentModel (always for a per-layer arch). Timings interleave the two, median of repeats
after warm-up.
Goal: ratio <= 1.10.
"""

import argparse
import statistics
import time

import torch
from report import command, machine, markdown_table, write_results, write_section

from autodistil_evo.spaces import Arch, load_space
from autodistil_evo.supernet import SuperLM


def step_time(model, ids, forward):
    start = time.perf_counter()
    loss = forward(model, ids).float().pow(2).mean()
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default="spaces/minilm-l6.yaml")
    parser.add_argument("--layerwise-space", default="spaces/minilm-l6-layerwise.yaml")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    space, layerwise = load_space(args.space), load_space(args.layerwise_space)
    dims = space.dims()
    cases = [
        (space, "base", Arch(6, 10, 320, 4.0)),  # BERT-expressible: 10 x 32 == 320
        (space, "base", Arch(5, 9, 288, 3.0)),  # BERT-expressible: 9 x 32 == 288
        (space, "small", Arch(6, 8, 160, 3.0)),
        (space, "tiny", Arch(3, 8, 96, 2.5)),
        # heterogeneous: heads and FFN chosen layer by layer
        (layerwise, "small", Arch(6, [10, 9, 8, 8, 7, 7], 160, [4.0, 3.5, 3.0, 3.0, 2.5, 2.5])),
    ]
    ids = torch.randint(0, dims.vocab_size, (args.batch, args.seq_len))
    rows, results = [], []
    for case_space, subspace, arch in cases:
        superlm = SuperLM(case_space.subspace(subspace), case_space.dims(), dropout=0.0).train()
        superlm.set_active(arch)
        student = superlm.extract(arch).train()
        in_super = lambda m, x: m(x)[0]  # noqa: E731
        alone = lambda m, x: m(input_ids=x).last_hidden_state  # noqa: E731
        for _ in range(2):
            step_time(superlm, ids, in_super), step_time(student, ids, alone)
        t_super, t_alone = [], []
        for _ in range(args.repeats):
            t_super.append(step_time(superlm, ids, in_super))
            t_alone.append(step_time(student, ids, alone))
        s, a = statistics.median(t_super), statistics.median(t_alone)
        rows.append((subspace, arch.key(), type(student).__name__, f"{s * 1e3:.1f}", f"{a * 1e3:.1f}", f"{s / a:.3f}"))
        results.append({"subspace": subspace, "arch": arch.key(), "standalone_class": type(student).__name__,
                        "superlm_ms": s * 1e3, "standalone_ms": a * 1e3, "ratio": s / a})
    write_results("supernet_overhead", {"batch": args.batch, "seq_len": args.seq_len, "repeats": args.repeats, "rows": results})
    table = markdown_table(["sub-space", "arch", "standalone", "in SuperLM (ms)", "standalone (ms)", "ratio"], rows)
    write_section(
        "supernet_overhead",
        f"## Supernet overhead\n\nMachine: {machine()}. Batch {args.batch} x {args.seq_len}, median of "
        f"{args.repeats} train steps (fwd+bwd) after 2 warm-up.\n\nCommand: `{command()}`\n\n{table}\n",
    )


if __name__ == "__main__":
    main()
