"""Does the proxy rank students the way fine-tuning does?

Takes archs spread over one search's global Pareto set and off it, exports each, fine-tunes each
on the embedded sentiment task with the same budget and seed, and reports Kendall tau and
Spearman rho between proxy loss and test accuracy (sign flipped: lower loss should mean higher
accuracy), and the same for FLOPs alone as the naive baseline. Writes a scatter plot PNG.
"""

import argparse
import json
from pathlib import Path

from common import WORK, cli, ensure_run, export_arch, finetune_accuracy
from report import command, machine, markdown_table, write_section
from scipy.stats import kendalltau, spearmanr

BUDGET = {"max_train": 3000, "epochs": 1, "batch_size": 32, "lr": 1e-4, "max_len": 64}


def pick_archs(search_dir, n_front: int, n_off: int) -> list:
    front = json.loads((search_dir / "pareto.json").read_text())["front"]
    history = [json.loads(line) for line in (search_dir / "history.jsonl").read_text().splitlines()]
    front_ids = {r["id"] for r in front}
    step = max(len(front) // n_front, 1)
    chosen = [{"id": r["id"], "subspace": r["subspace"], "arch": {k: r[k] for k in ("layers", "heads", "hidden", "mlp_ratio")},
               "loss": r["loss"], "flops": r["flops"], "on_front": True} for r in front[::step][:n_front]]
    off = {}
    for r in history:
        rid = f"{r['subspace']}-{r['key']}"
        if rid not in front_ids:
            off[rid] = {"id": rid, "subspace": r["subspace"], "arch": r["arch"], "loss": r["loss"], "flops": r["flops"], "on_front": False}
    off = sorted(off.values(), key=lambda r: r["flops"])
    step = max(len(off) // n_off, 1)
    return chosen + off[::step][:n_off]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default=str(WORK / "quickstart-run"))
    parser.add_argument("--search-dir", default=str(WORK / "k3-search"))
    parser.add_argument("--front", type=int, default=6)
    parser.add_argument("--off", type=int, default=4)
    args = parser.parse_args()
    run_dir = ensure_run(args.run_dir)
    search_dir = Path(args.search_dir)
    if not (search_dir / "pareto.json").is_file():
        cli("evolve", run_dir, "--out", search_dir, "--population", 12, "--generations", 4, "--resume")
    rows = []
    for entry in pick_archs(search_dir, args.front, args.off):
        model = export_arch(run_dir, entry["subspace"], entry["arch"], WORK / "students" / entry["id"])
        result = finetune_accuracy(model, BUDGET)
        rows.append({**entry, "test_accuracy": result["test_accuracy"], "dev_accuracy": result["dev_accuracy"]})
        print(entry["id"], result["test_accuracy"], flush=True)
    accuracy = [r["test_accuracy"] for r in rows]
    tau_loss, _ = kendalltau([-r["loss"] for r in rows], accuracy)
    rho_loss, _ = spearmanr([-r["loss"] for r in rows], accuracy)
    tau_flops, _ = kendalltau([r["flops"] for r in rows], accuracy)
    rho_flops, _ = spearmanr([r["flops"] for r in rows], accuracy)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "loss", "proxy loss"), (axes[1], "flops", "FLOPs")):
        for on_front, marker in ((True, "o"), (False, "x")):
            pts = [r for r in rows if r["on_front"] == on_front]
            ax.scatter([r[key] for r in pts], [r["test_accuracy"] for r in pts], marker=marker,
                       label="on the Pareto set" if on_front else "off it")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (fine-tuned)")
    axes[1].set_xscale("log")
    axes[0].legend()
    fig.suptitle(f"proxy vs. fine-tuned accuracy: Kendall tau {tau_loss:.2f} (FLOPs alone {tau_flops:.2f})")
    fig.tight_layout()
    fig.savefig(WORK.parent / "proxy_correlation.png", dpi=100)

    table_rows = [(r["id"], "yes" if r["on_front"] else "no", f"{r['flops'] / 1e9:.3f}", f"{r['loss']:.4f}", f"{r['test_accuracy']:.3f}")
                  for r in sorted(rows, key=lambda r: r["flops"])]
    table = markdown_table(["student", "on front", "GFLOPs", "proxy loss", "test accuracy"], table_rows)
    summary = markdown_table(["ranking by", "Kendall tau", "Spearman rho"],
                             [("proxy loss (lower is better)", f"{tau_loss:.3f}", f"{rho_loss:.3f}"),
                              ("FLOPs alone (higher is better)", f"{tau_flops:.3f}", f"{rho_flops:.3f}")])
    write_section(
        "proxy_correlation",
        f"## Proxy trustworthiness\n\nMachine: {machine()}. {len(rows)} students of the quickstart search "
        f"({sum(r['on_front'] for r in rows)} on the global Pareto set, the rest off it), each exported and fine-tuned on "
        f"the embedded fresh/rotten task with the same budget ({BUDGET}, seed 0); accuracy on its test split.\n\n"
        f"Command: `{command()}`\n\n{summary}\n\n{table}\n\n![proxy vs accuracy](benchmarks/proxy_correlation.png)\n",
    )


if __name__ == "__main__":
    main()
