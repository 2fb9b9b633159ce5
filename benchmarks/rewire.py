"""Importance-ordered slicing (`rewire: true`) against first-k slicing, at the quickstart budget.

Two K=3 runs of the quickstart recipe that differ only in `rewire`. For each, at the teacher
initialisation (0 steps) and after training: the held-out proxy loss (the search's objective) of the
hand shapes of `common.HAND` (about 70%, 45% and 20% of the teacher's FLOPs) and of each sub-space's
smallest arch; and the trained hand shapes' test accuracy after fine-tuning (bench budget, the same
seeds), the differences paired by seed.
"""

import json

from common import (
    FINETUNE,
    HAND,
    QUICKSTART_RECIPE,
    SEEDS,
    WORK,
    accuracy,
    ensure_run,
    export_arch,
    paired_difference,
    prefetch,
    write_recipe,
)
from report import command, describe_finetune, machine, markdown_table, write_results, write_section

from autodistil_evo.spaces import Arch, count_flops

ORDERS = {"first-k": False, "importance": True}
PROXY_BLOCKS = 64  # evolve's default proxy set


def proxy_losses(run_dir, archs) -> dict:
    """{(subspace, arch key): held-out proxy loss} of `archs` [(subspace, Arch)] on the run's proxy set."""
    from autodistil_evo.data import open_run_corpus, proxy_sample
    from autodistil_evo.distill.artifact import load_superlm
    from autodistil_evo.search.evaluator import ProxyEvaluator
    from autodistil_evo.teacher import load_teacher

    out, teacher, heldout = {}, None, None
    for subspace in sorted({s for s, _ in archs}):
        trained = load_superlm(f"{run_dir}/{subspace}")
        meta = trained.meta
        if teacher is None:
            teacher = load_teacher(meta["teacher"]["spec"])
            packed = open_run_corpus(meta.get("corpus_store"), meta["corpus"], teacher.tokenizer, meta["seq_len"],
                                     meta["heldout_fraction"])
            heldout = proxy_sample(packed.heldout, PROXY_BLOCKS)
        evaluator = ProxyEvaluator(trained.superlm, teacher.model, heldout, meta["relation_heads"], meta["teacher_layer"])
        for s, arch in archs:
            if s == subspace:
                out[(s, arch.key())] = evaluator.proxy_loss(arch)
    return out


def main():
    from autodistil_evo.distill.artifact import load_superlm

    runs = {}
    for order, rewire in ORDERS.items():
        recipe = write_recipe(QUICKSTART_RECIPE, WORK / "recipes" / f"quickstart-{order}.yaml", rewire=rewire)
        runs[order] = {"init": ensure_run(WORK / "rewire" / f"{order}-init", recipe, extra=("--steps", "0")),
                       "trained": ensure_run(WORK / "rewire" / f"{order}-run", recipe)}
    any_run = runs["first-k"]["trained"]
    first = load_superlm(f"{any_run}/base")
    dims, seq_len = first.space.dims(first.teacher_shape), first.space.seq_len
    archs = [(subspace, Arch.from_dict(arch)) for _, subspace, arch in HAND]
    archs += [(name, load_superlm(f"{any_run}/{name}").subspace.smallest()) for name in ("base", "small", "tiny")]
    losses = {(order, when): proxy_losses(run, archs) for order, stages in runs.items() for when, run in stages.items()}

    students = {(order, s, a.key()): export_arch(runs[order]["trained"], s, a.to_dict()) for order in ORDERS for s, a in archs[:3]}
    prefetch(list(students.values()))
    rows = []
    for s, arch in archs:
        for order in ORDERS:
            row = {"subspace": s, "arch": arch.key(), "hand": (s, arch) in archs[:3], "order": order,
                   "flops": count_flops(arch, dims, seq_len),
                   "proxy_loss_init": losses[(order, "init")][(s, arch.key())],
                   "proxy_loss_trained": losses[(order, "trained")][(s, arch.key())]}
            if row["hand"]:
                row.update(accuracy(students[(order, s, arch.key())]), seeds=list(range(SEEDS)))
            rows.append(row)
    comparisons = []
    for s, arch in archs[:3]:
        a, b = (next(r for r in rows if (r["subspace"], r["arch"], r["order"]) == (s, arch.key(), o))
                for o in ("importance", "first-k"))
        d = paired_difference(a, b)
        comparisons.append({"subspace": s, "arch": arch.key(), **d, "better": d["points"] > 2 * d["sem"],
                            "worse": d["points"] < -2 * d["sem"]})
    steps = json.loads((runs["first-k"]["trained"] / "base" / "superlm.json").read_text())["step"]
    write_results("rewire", {"recipe": "quickstart", "steps": steps, "proxy_blocks": PROXY_BLOCKS, "finetune_budget": FINETUNE,
                             "seeds": SEEDS, "rows": rows, "comparisons": comparisons})
    write_section("rewire", report(rows, comparisons, steps))


def report(rows, comparisons, steps) -> str:
    pairs = {}
    for r in rows:
        pairs.setdefault((r["subspace"], r["arch"]), {})[r["order"]] = r
    table = markdown_table(
        ["arch", "GFLOPs", "proxy loss at init: first-k / importance", f"after {steps} steps: first-k / importance",
         "accuracy: first-k / importance", "importance minus first-k (points)"],
        [(f"{s} {a}", f"{p['first-k']['flops'] / 1e9:.2f}",
          f"{p['first-k']['proxy_loss_init']:.3f} / {p['importance']['proxy_loss_init']:.3f}",
          f"{p['first-k']['proxy_loss_trained']:.3f} / {p['importance']['proxy_loss_trained']:.3f}",
          f"{p['first-k']['accuracy_mean']:.3f} / {p['importance']['accuracy_mean']:.3f}" if p["first-k"]["hand"] else "-",
          next((f"{c['points']:+.1f} ± {c['sem']:.1f}" for c in comparisons if (c["subspace"], c["arch"]) == (s, a)), "-"))
         for (s, a), p in pairs.items()])
    better = sum(c["better"] for c in comparisons)
    worse = sum(c["worse"] for c in comparisons)
    return (
        "## Importance-ordered slicing\n\n"
        f"Rewired slicing is better than first-k by more than 2 standard errors for {better} of {len(comparisons)} hand "
        f"shapes and worse for {worse}. Machine: {machine()}. Command: `{command()}`. Two K=3 runs of the quickstart "
        f"recipe ({steps} steps) that differ only in `rewire`; proxy loss on {PROXY_BLOCKS} held-out blocks at the teacher "
        f"initialisation and after training; test accuracy of the trained hand shapes after fine-tuning "
        f"({describe_finetune(FINETUNE)}), mean over seeds 0-{SEEDS - 1}, differences paired by seed. The last three rows "
        f"are each sub-space's smallest arch.\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
