"""The bench SuperLMs (recipes/bench.yaml): have they flattened? Training-loss curves per sub-space,
steps and wall time, and the held-out proxy loss (the search's proxy set, 64 blocks) of each
sub-space's largest and smallest arch at the last two checkpoints."""

import json

import numpy as np
from common import BENCH_RECIPE, BENCH_RUN, REPO, ensure_run
from report import command, machine, markdown_table, save_figure, write_results, write_section

from autodistil_evo.data import open_run_corpus, proxy_sample
from autodistil_evo.distill import checkpoint as ckpt
from autodistil_evo.distill.artifact import load_superlm
from autodistil_evo.plots import new_figure
from autodistil_evo.search.evaluator import ProxyEvaluator
from autodistil_evo.teacher import load_teacher

SUBSPACES = ("base", "small", "tiny")


def main():
    run = ensure_run(BENCH_RUN, BENCH_RECIPE)
    rows, curves, results = [], {}, {}
    teacher = None
    for name in SUBSPACES:
        trained = load_superlm(run / name)
        meta = trained.meta
        if teacher is None:
            teacher = load_teacher(meta["teacher"]["spec"])
            packed = open_run_corpus(meta["corpus_store"], meta["corpus"], teacher.tokenizer, meta["seq_len"],
                                     meta["heldout_fraction"])
            heldout = proxy_sample(packed.heldout, 64)
        metrics = [json.loads(line) for line in (run / name / "metrics.jsonl").read_text().splitlines()]
        metrics = [m for m in metrics if "loss" in m]
        tokens = meta["seq_len"] * 16  # recipes/bench.yaml: micro_batch 16, one process
        seconds = sum(tokens / m["tokens_per_s"] for m in metrics)
        curves[name] = [m["loss"] for m in metrics]
        held = {}
        for path in ckpt.list_checkpoints(run / name / "checkpoints")[-2:]:
            checkpoint = ckpt.check_checkpoint(path)
            trained.superlm.load_state_dict(checkpoint.model_state())
            evaluator = ProxyEvaluator(trained.superlm, teacher.model, heldout, meta["relation_heads"], meta["teacher_layer"])
            held[checkpoint.step] = {"largest": evaluator.proxy_loss(trained.subspace.largest()),
                                     "smallest": evaluator.proxy_loss(trained.subspace.smallest())}
        (a, first), (b, last) = sorted(held.items())
        change = {k: (last[k] - first[k]) / first[k] for k in last}
        results[name] = {"steps": len(metrics), "wall_seconds": seconds, "final_train_loss": curves[name][-1],
                         "heldout": {str(k): v for k, v in held.items()}, "relative_change_last_interval": change}
        rows.append((name, len(metrics), f"{seconds / 60:.1f}", f"{np.mean(curves[name][:10]):.3f}",
                     f"{np.mean(curves[name][-10:]):.3f}",
                     f"{first['largest']:.4f} → {last['largest']:.4f} ({100 * change['largest']:+.1f}%)",
                     f"{first['smallest']:.4f} → {last['smallest']:.4f} ({100 * change['smallest']:+.1f}%)"))
    fig, ax = new_figure(figsize=(7, 4))
    for name, curve in curves.items():
        window = min(10, len(curve))  # a run shorter than 10 steps (make bench-smoke): its mean
        smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
        ax.plot(range(window, len(curve) + 1), smooth, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("sandwich-mean relation KL (10-step mean)")
    ax.set_title("bench SuperLMs (recipes/bench.yaml)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, "bench_superlms")
    write_results("bench_superlms", {"run": str(BENCH_RUN.relative_to(REPO)), "subspaces": results})
    table = markdown_table(["SuperLM", "steps", "wall min", "train loss, first 10 steps", "last 10 steps",
                            f"held-out proxy loss, largest arch (step {a} → {b})", "smallest arch"], rows)
    write_section(
        "bench_superlms",
        f"## Bench SuperLMs\n\nMachine: {machine()}. `recipes/bench.yaml` (batch 16 x 64, lr 2e-4 decaying to 0); "
        f"held-out proxy loss on the search's proxy set (64 held-out blocks, seed 0). Wall time is the sum of the "
        f"trainer's own step times.\n\nCommand: `{command()}`\n\n{table}\n\n"
        f"![bench SuperLM loss curves](benchmarks/bench_superlms.png)\n",
    )


if __name__ == "__main__":
    main()
