"""Does the proxy rank students the way fine-tuning does, and the way standalone distillation does?

On the bench run (recipes/bench.yaml SuperLMs, trained until their proxy loss flattens) and its
K=3 search: 12 students, 9 spread over the FLOPs range of the global front (equal compute's three searched
students among them, their fine-tunes shared) and 3 off it, each
exported and fine-tuned on the embedded task with the bench budget over 3 seeds. Reports Kendall
tau of proxy loss (lower is better) vs mean test accuracy with a bootstrap 95% interval, tau within
FLOPs bands (where FLOPs alone cannot rank), FLOPs alone as the naive baseline. With `--alone N`
(`make bench-studies`; `make bench` passes 0 for its time) a second ground truth that needs no labels,
in a section of its own: N of the students' archs distilled standalone with the same per-arch
budget, tau between the SuperLM proxy loss and their held-out distillation loss.
"""

import argparse
import json

import numpy as np
from common import (
    BENCH_RECIPE,
    FINETUNE,
    REPO,
    SEEDS,
    accuracy,
    alone_dir,
    cached_finetune,
    distil_alone,
    ensure_bench_search,
    export_arch,
    hand_budgets,
    in_parallel,
    kendall_with_ci,
    prefetch,
    recipe_steps,
    select_under,
    student_dir,
)
from report import command, describe_finetune, machine, markdown_table, save_figure, write_results, write_section
from scipy.stats import kendalltau

from autodistil_evo.plots import new_figure
from autodistil_evo.spaces.space import GENES


def pick_archs(search_dir, n_front: int, n_off: int, include=()) -> list:
    """`n_front` students of the front: those whose ids are in `include` (equal compute's searched students,
    so that their fine-tunes are shared), the rest evenly over the front's FLOPs range; `n_off` off the
    front (also spread by FLOPs)."""
    front = sorted(json.loads((search_dir / "pareto.json").read_text())["front"], key=lambda r: r["flops"])
    history = [json.loads(line) for line in (search_dir / "history.jsonl").read_text().splitlines()]
    front_ids = {r["id"] for r in front}
    include = set(include)
    kept = [i for i, r in enumerate(front) if r["id"] in include][:n_front]
    rest = [i for i in range(len(front)) if i not in kept]
    spread = np.linspace(0, len(rest) - 1, min(n_front - len(kept), len(rest))).round().astype(int)
    index = sorted(kept + [rest[j] for j in np.unique(spread)])
    chosen = [{"id": front[i]["id"], "subspace": front[i]["subspace"], "arch": {k: front[i][k] for k in GENES},
               "proxy_loss": front[i]["loss"], "flops": front[i]["flops"], "on_front": True} for i in index]
    off = {}
    for r in history:
        rid = f"{r['subspace']}-{r['key']}"
        if rid not in front_ids:
            off[rid] = {"id": rid, "subspace": r["subspace"], "arch": r["arch"], "proxy_loss": r["loss"],
                        "flops": r["flops"], "on_front": False}
    off = sorted(off.values(), key=lambda r: r["flops"])
    index = np.unique(np.linspace(0, len(off) - 1, min(n_off, len(off))).round().astype(int))
    return chosen + [off[i] for i in index]


def within_bands(rows, bands: int):
    """Kendall tau inside each FLOPs band (students sorted by FLOPs, cut into equal-count bands),
    and the pooled within-band tau: concordant minus discordant over all same-band pairs."""
    rows = sorted(rows, key=lambda r: r["flops"])
    groups = [list(g) for g in np.array_split(np.arange(len(rows)), bands)]
    per_band, concordant, discordant = [], 0, 0
    for g in groups:
        band = [rows[i] for i in g]
        loss, acc = [-r["proxy_loss"] for r in band], [r["accuracy_mean"] for r in band]
        per_band.append({"flops": [band[0]["flops"], band[-1]["flops"]], "students": len(band),
                         "kendall_tau": float(kendalltau(loss, acc)[0])})
        for i in range(len(band)):
            for j in range(i + 1, len(band)):
                s = np.sign(loss[i] - loss[j]) * np.sign(acc[i] - acc[j])
                concordant += s > 0
                discordant += s < 0
    pooled = float((concordant - discordant) / max(concordant + discordant, 1))
    return per_band, pooled


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--front", type=int, default=9, help="students spread over the front (with --off: 12)")
    parser.add_argument("--off", type=int, default=3)
    parser.add_argument("--alone", type=int, default=6, help="archs distilled standalone (0: none, and no section)")
    parser.add_argument("--alone-steps", type=int, default=recipe_steps(BENCH_RECIPE),
                        help="steps per standalone arch (the bench recipe's)")
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--cached-only", action="store_true",
                        help="report only the students and standalone runs already measured (an interrupted bench)")
    args = parser.parse_args()
    run_dir, search_dir = ensure_bench_search()
    shared = [found["id"] for found in (select_under(search_dir, flops) for *_, flops in hand_budgets()) if found]
    entries = [e for e in pick_archs(search_dir, args.front, args.off, shared) if not args.cached_only or
               cached_finetune(student_dir(run_dir, e["subspace"], e["arch"])) is not None]
    models = [export_arch(run_dir, e["subspace"], e["arch"]) for e in entries]
    prefetch(models)
    rows = []
    for entry, model in zip(entries, models):
        rows.append({**entry, **accuracy(model)})
        print(entry["id"], f"{rows[-1]['accuracy_mean']:.3f} ± {rows[-1]['accuracy_std']:.3f}", flush=True)
    majority = _majority()
    tau, ci = kendall_with_ci([-r["proxy_loss"] for r in rows], [r["accuracy_mean"] for r in rows])
    tau_flops, ci_flops = kendall_with_ci([r["flops"] for r in rows], [r["accuracy_mean"] for r in rows])
    per_band, pooled = within_bands(rows, args.bands)

    front_rows = [r for r in rows if r["on_front"]]
    cleared = sum(r["accuracy_mean"] >= majority + 0.05 for r in front_rows)
    partial = "" if len(rows) >= args.front + args.off else (
        f"**Partial: the bench was stopped before every stage ran; {len(rows)} of {args.front + args.off} students "
        f"fine-tuned. Figures are over what was measured.** ")
    write_results("proxy_correlation", {
        "run": str(run_dir.relative_to(REPO)), "complete": not partial, "finetune_budget": FINETUNE, "seeds": SEEDS,
        "kendall_tau": tau, "ci95": ci, "kendall_tau_flops": tau_flops, "ci95_flops": ci_flops,
        "bands": per_band, "kendall_tau_within_bands": pooled,
        "majority_accuracy": majority, "front_students_clearing_majority_by_5": [cleared, len(front_rows)],
        "students": [{k: r.get(k) for k in ("id", "flops", "proxy_loss", "on_front", "accuracy_mean", "accuracy_std",
                                           "accuracy_seeds", "arch", "subspace")} for r in rows],
    })
    _plot(rows, tau, tau_flops)
    by_flops = sorted(rows, key=lambda r: r["flops"])
    table = markdown_table(
        ["student", "on front", "GFLOPs", "proxy loss", f"test accuracy (mean ± std, {SEEDS} seeds)"],
        [(r["id"], "yes" if r["on_front"] else "no", f"{r['flops'] / 1e9:.3f}", f"{r['proxy_loss']:.4f}",
          f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}") for r in by_flops])
    summary = markdown_table(["ranking", "Kendall tau", "bootstrap 95% interval"], [
        ("proxy loss vs fine-tuned accuracy (all students)", f"{tau:.3f}", f"[{ci[0]:.3f}, {ci[1]:.3f}]"),
        ("FLOPs alone vs fine-tuned accuracy", f"{tau_flops:.3f}", f"[{ci_flops[0]:.3f}, {ci_flops[1]:.3f}]"),
        (f"proxy loss vs accuracy within {args.bands} FLOPs bands (pooled pairs)", f"{pooled:.3f}", ""),
        *((f"  band {b['flops'][0] / 1e9:.3f}-{b['flops'][1] / 1e9:.3f} GFLOPs ({b['students']} students)",
           f"{b['kendall_tau']:.3f}", "") for b in per_band),
    ])
    write_section(
        "proxy_correlation",
        f"## Proxy trustworthiness\n\n{partial}Machine: {machine()}. Bench run (`recipes/bench.yaml`) and its K=3 search; "
        f"{len(rows)} students ({len(front_rows)} spread over the global front's FLOPs range, the rest off it), each "
        f"exported and fine-tuned on the embedded fresh/rotten task ({describe_finetune(FINETUNE)}, seeds 0-{SEEDS - 1}); accuracy on its "
        f"test split, majority class {majority:.3f}. {cleared} of {len(front_rows)} front students clear the majority "
        f"class by 5 points or more. Bootstrap: 2,000 resamples of the students.\n\n"
        f"Command: `{command()}`\n\n{summary}\n\n{table}\n\n![proxy vs accuracy](benchmarks/proxy_correlation.png)\n",
    )
    if args.alone:
        standalone(run_dir, by_flops, args.alone, args.alone_steps, args.cached_only)


def standalone(run_dir, by_flops: list, n: int, steps: int, cached_only: bool):
    """The ground truth that needs no labels: every `len/n`-th student by FLOPs distilled alone from the
    teacher for `steps`; Kendall tau of the SuperLM proxy loss against their held-out distillation loss."""
    ids = [by_flops[i]["id"] for i in np.unique(np.linspace(0, len(by_flops) - 1, n).round().astype(int))]
    todo = [r for r in reversed(by_flops) if r["id"] in ids and  # the largest first, two at a time
            not (cached_only and not (alone_dir(r["arch"], steps) / "result.json").is_file())]
    alones = in_parallel(lambda r, threads: distil_alone(r["arch"], steps, threads=threads), todo,
                         label="standalone distillations")
    rows = [{**r, "standalone_heldout_loss": alone["heldout_loss"]} for r, alone in zip(todo, alones)][::-1]
    tau, ci = kendall_with_ci([r["proxy_loss"] for r in rows], [r["standalone_heldout_loss"] for r in rows]) \
        if len(rows) >= 3 else (float("nan"), [float("nan"), float("nan")])
    partial = "" if len(rows) >= n else (
        f"**Partial: {len(rows)} of {n} standalone distillations; figures are over what was measured.** ")
    write_results("proxy_standalone", {
        "run": str(run_dir.relative_to(REPO)), "complete": not partial, "steps": steps, "kendall_tau": tau, "ci95": ci,
        "archs": [{k: r[k] for k in ("id", "flops", "proxy_loss", "standalone_heldout_loss", "arch", "subspace")} for r in rows],
    })
    fig, ax = new_figure(figsize=(5, 4))
    ax.scatter([r["proxy_loss"] for r in rows], [r["standalone_heldout_loss"] for r in rows])
    ax.set_xlabel("SuperLM proxy loss")
    ax.set_ylabel("standalone held-out distillation loss")
    ax.set_title(f"weight sharing vs standalone: tau {tau:.2f}")
    fig.tight_layout()
    save_figure(fig, "proxy_standalone")
    table = markdown_table(["arch", "GFLOPs", "SuperLM proxy loss", "standalone held-out loss"],
                           [(r["id"], f"{r['flops'] / 1e9:.3f}", f"{r['proxy_loss']:.4f}", f"{r['standalone_heldout_loss']:.4f}")
                            for r in rows])
    write_section(
        "proxy_standalone",
        f"## Proxy against standalone distillation\n\n{partial}Machine: {machine()}. {len(rows)} of the students of "
        f"[Proxy trustworthiness](#proxy-trustworthiness), spread by FLOPs, each distilled alone from the teacher with the bench "
        f"recipe's data and schedule for {steps} steps (`recipes/bench.yaml`, a one-arch space); its held-out distillation loss "
        f"against the SuperLM's proxy loss for the same arch: Kendall tau {tau:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] (bootstrap 95% "
        f"interval, 2,000 resamples). A ground truth that needs no labels: does weight sharing rank archs as training each "
        f"alone would?\n\nCommand: `{command()}`\n\n{table}\n\n![proxy vs standalone](benchmarks/proxy_standalone.png)\n",
    )


def _majority() -> float:
    from autodistil_evo.data import sentiment_task

    test = sentiment_task().test
    return max(sum(y == c for _, y in test) for c in (0, 1)) / len(test)


def _plot(rows, tau, tau_flops):
    fig, axes = new_figure(ncols=2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "proxy_loss", "proxy loss"), (axes[1], "flops", "FLOPs")):
        for on_front, marker in ((True, "o"), (False, "x")):
            pts = [r for r in rows if r["on_front"] == on_front]
            ax.errorbar([r[key] for r in pts], [r["accuracy_mean"] for r in pts], yerr=[r["accuracy_std"] for r in pts],
                        fmt=marker, label="on the front" if on_front else "off it")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (mean ± std over seeds)")
    axes[1].set_xscale("log")
    axes[0].legend()
    axes[0].set_title(f"Kendall tau {tau:.2f} (FLOPs alone {tau_flops:.2f})")
    fig.tight_layout()
    save_figure(fig, "proxy_correlation")


if __name__ == "__main__":
    main()
