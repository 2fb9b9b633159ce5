"""Search quality on a trained per-layer sub-space: NSGA-II vs random search at equal evaluations.

The quickstart recipe trains the `small` sub-space of spaces/minilm-l6-layerwise.yaml (heads and
FFN ratio per layer: 71,303,168 archs), so no search can enumerate it. Every search runs to 400
distinct evaluated archs; its hypervolume after the first 100, 200 and 400 is compared with the
best-known front (the union of every run's evaluations and the 128 uniform archs), under one
reference point for all. Both NSGA-II operator sets are measured. Also: the heterogeneity gain
(HV of the per-layer front vs the exhaustive front of the same SuperLM's 128 uniform archs) and the
cost of one proxy evaluation relative to a bare forward of the extracted subnet.
"""

import argparse
import itertools
import statistics
import time

import numpy as np
import torch
from common import WORK, ensure_run
from report import command, machine, markdown_table, write_results, write_section

from autodistil_evo.data import open_run_corpus, proxy_sample
from autodistil_evo.distill.artifact import load_superlm
from autodistil_evo.search.algorithms import make_search
from autodistil_evo.search.evaluator import ProxyEvaluator
from autodistil_evo.search.pareto import hypervolume, objective_matrix
from autodistil_evo.search.problem import SubspaceProblem
from autodistil_evo.spaces import Arch

OBJECTIVES = ["loss", "flops"]
# label -> (algorithm, operators, population; None = --population)
SEARCHES = {
    "NSGA-II (ux-reset)": ("nsga2", "ux-reset", None),
    "NSGA-II (ux-reset, population 10)": ("nsga2", "ux-reset", 10),  # twice the generations for the same budget
    "NSGA-II (sbx-pm)": ("nsga2", "sbx-pm", None),
    "random": ("random", None, None),
}


def run_search(algorithm, operators, problem, population, budget, seed):
    """Records of the first `budget` distinct archs, in the order the search evaluated them."""
    search = make_search(algorithm, problem, population, seed, *([operators] if operators else []))
    seen, rows = set(), []
    for _ in range(8 * budget // population):  # NSGA-II may re-propose archs it saw (cache hits): cap it
        if len(seen) >= budget:
            break
        pop = search.ask()
        if pop is None:
            break
        search.evaluate(pop)
        search.tell(pop)
        archs = [problem.subspace.decode(x) for x in pop.get("X")]
        for arch, record in zip(archs, problem.records(archs)):
            if arch.key() not in seen and len(seen) < budget:
                seen.add(arch.key())
                rows.append({**record, "key": arch.key()})
    return rows


def proxy_cost_ratios(trained, evaluator, archs):
    """Proxy evaluation time / bare forward of the extracted subnet on the same batches (median of 3)."""
    ratios = []
    for arch in archs:
        student = trained.superlm.extract(arch)
        t_proxy, t_bare = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            evaluator.proxy_loss(arch)
            t1 = time.perf_counter()
            with torch.inference_mode():
                for ids, mask, _ in evaluator.batches:
                    student(input_ids=ids, attention_mask=mask)
            t2 = time.perf_counter()
            t_proxy.append(t1 - t0)
            t_bare.append(t2 - t1)
        ratios.append(statistics.median(t_proxy) / statistics.median(t_bare))
    return ratios


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default=str(WORK / "quickstart-layerwise-run"))
    parser.add_argument("--subspace", default="small")
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--budgets", default="100,200,400", help="Distinct evaluations to compare at (the last is each run's length).")
    args = parser.parse_args()
    budgets = tuple(int(b) for b in args.budgets.split(","))
    run_dir = ensure_run(args.run_dir, extra=("--space", "spaces/minilm-l6-layerwise.yaml", "--subspace", args.subspace),
                         subspaces=(args.subspace,))
    trained = load_superlm(f"{run_dir}/{args.subspace}")
    sub, meta = trained.subspace, trained.meta
    from autodistil_evo.teacher import load_teacher

    teacher = load_teacher(meta["teacher"]["spec"])
    packed = open_run_corpus(meta.get("corpus_store"), meta["corpus"], teacher.tokenizer, meta["seq_len"], meta["heldout_fraction"])
    heldout = proxy_sample(packed.heldout, args.eval_samples)  # the proxy set `evolve` uses
    evaluator = ProxyEvaluator(trained.superlm, teacher.model, heldout, meta["relation_heads"], meta["teacher_layer"])
    dims = trained.space.dims(trained.teacher_shape)
    problem = SubspaceProblem(sub, dims, trained.space.seq_len, evaluator, OBJECTIVES, [])

    # The 128 uniform archs of the same SuperLM, evaluated exhaustively.
    start = time.perf_counter()
    uniform_archs = [Arch(*c) for c in itertools.product(sub.layers, sub.heads, sub.hidden, sub.mlp_ratio)]
    uniform = [{**r, "key": a.key()} for a, r in zip(uniform_archs, problem.records(uniform_archs))]
    uniform_seconds = (time.perf_counter() - start) / len(uniform)

    runs = {label: [] for label in SEARCHES}
    start = time.perf_counter()
    for label, (algorithm, operators, population) in SEARCHES.items():
        for seed in range(args.seeds):
            runs[label].append(run_search(algorithm, operators, problem, population or args.population, max(budgets), seed))
            print(f"{label} seed {seed}: {len(runs[label][-1])} distinct archs, cache {len(evaluator.cache)}", flush=True)
    search_seconds = time.perf_counter() - start

    union = list({r["key"]: r for r in uniform + [r for rs in runs.values() for rows in rs for r in rows]}.values())
    reference = list(1.1 * objective_matrix(union, OBJECTIVES).max(axis=0))
    best_hv = hypervolume(union, OBJECTIVES, reference)
    uniform_hv = hypervolume(uniform, OBJECTIVES, reference)

    def ratio(rows):
        return hypervolume(rows, OBJECTIVES, reference) / best_hv

    def to_099(rows):
        """Distinct evaluations until 0.99 of the best-known HV (None: not within the budget)."""
        for n in range(10, len(rows) + 1, 10):
            if ratio(rows[:n]) >= 0.99:  # checked every 10 evaluations
                return n
        return None

    results, table = {}, []
    for label, seed_rows in runs.items():
        at = {b: [ratio(rows[:b]) for rows in seed_rows] for b in budgets}
        reach = [to_099(rows) for rows in seed_rows]
        results[label] = {
            "hv_ratio": {str(b): {"mean": statistics.mean(v), "min": min(v), "max": max(v), "per_seed": v} for b, v in at.items()},
            "evaluations_to_0.99": reach,
        }
        reached = [r for r in reach if r is not None]
        table.append((label, *(f"{statistics.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in at.values()),
                      f"{len(reached)}/{len(reach)} seeds" + (f", mean {statistics.mean(reached):.0f}" if reached else "")))
    best_nsga = max((label for label in SEARCHES if label != "random"), key=lambda k: results[k]["hv_ratio"][str(budgets[1])]["mean"])
    middle = str(budgets[1])
    goal_200 = results[best_nsga]["hv_ratio"][middle]["mean"] > results["random"]["hv_ratio"][middle]["max"]
    goal_400 = sum(r is not None for r in results[best_nsga]["evaluations_to_0.99"]) >= 4
    searched_hv = [ratio(rows) for rows in runs[best_nsga]]

    sample = [sub.sample(np.random.default_rng(i)) for i in range(6)]
    costs = proxy_cost_ratios(trained, evaluator, sample)
    data = {
        "subspace": args.subspace, "candidates": sub.candidate_count(), "seeds": args.seeds, "population": args.population,
        "budgets": list(budgets), "proxy_blocks": len(heldout), "seq_len": meta["seq_len"],
        "superlm_steps": meta["step"], "reference_point": reference, "best_known_hv": best_hv,
        "best_known_archs": len(union), "searches": results,
        "goals": {"nsga2_mean_at_200_above_random_best": goal_200, "nsga2_0.99_within_400_in_4_of_5": goal_400,
                  "operators_judged": best_nsga},
        "heterogeneity": {"uniform_exhaustive_hv_ratio": uniform_hv / best_hv, "per_layer_searched_hv_ratio_mean": statistics.mean(searched_hv),
                          "per_layer_searched_hv_ratio_min": min(searched_hv), "uniform_archs": len(uniform)},
        "seconds_per_evaluation": uniform_seconds, "search_seconds": search_seconds,
        "proxy_cost_ratio": {"median": statistics.median(costs), "max": max(costs)},
    }
    write_results("search_quality", data)
    header = ["search (5 seeds)" if args.seeds == 5 else f"search ({args.seeds} seeds)",
              *(f"HV / best-known at {b} evals, mean (min-max)" for b in budgets), f"0.99 of best-known within {max(budgets)}"]
    write_section(
        "search_quality",
        f"## Search quality (per-layer space)\n\nMachine: {machine()}. Sub-space `{args.subspace}` of "
        f"`spaces/minilm-l6-layerwise.yaml` ({sub.candidate_count():,} archs), SuperLM trained by the quickstart recipe "
        f"({meta['step']} steps); proxy set {len(heldout)} held-out blocks of {meta['seq_len']} tokens (seeded uniform sample, as `evolve`); objectives proxy "
        f"loss x FLOPs; population {args.population}; seeds 0-{args.seeds - 1}. HV is measured against the best-known "
        f"front (union of every run's {len(union):,} distinct archs and the 128 uniform ones) with one reference point "
        f"(1.1 x the worst value of each objective in that union). One evaluation: {uniform_seconds * 1e3:.0f} ms; "
        f"all searches {search_seconds / 60:.1f} min (a shared cache: an arch is evaluated once).\n\n"
        f"Command: `{command()}`\n\n{markdown_table(header, table)}\n\n"
        f"Goals, judged on {best_nsga}: mean HV at {middle} evaluations above random's best seed: "
        f"**{'met' if goal_200 else 'not met'}**; 0.99 of the best-known HV within {max(budgets)} evaluations in at least "
        f"4 seeds: **{'met' if goal_400 else 'not met'}**.\n\n"
        f"Heterogeneity gain on the same SuperLM: the exhaustive front of its 128 uniform archs reaches "
        f"{uniform_hv / best_hv:.3f} of the best-known HV; the per-layer fronts {best_nsga} found in {max(budgets)} evaluations "
        f"reach {statistics.mean(searched_hv):.3f} (min {min(searched_hv):.3f}).\n\n"
        f"Proxy evaluation cost / bare forward of the extracted subnet on the same batches: median "
        f"{statistics.median(costs):.3f}, max {max(costs):.3f} over {len(costs)} heterogeneous archs (goal <= 1.25).\n",
    )


if __name__ == "__main__":
    main()
