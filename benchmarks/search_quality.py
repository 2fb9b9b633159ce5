"""Search quality on a trained per-layer sub-space: NSGA-II, LINAS (three settings) and random search at equal evaluations.

The quickstart recipe trains the `small` sub-space of spaces/minilm-l6-layerwise.yaml (heads and
FFN ratio per layer: 71,303,168 archs), so no search can enumerate it. Every search runs to 400
distinct evaluated archs; its hypervolume after the first 50, 100, 200 and 400 is compared with the
best-known front (the union of every run's evaluations and the 128 uniform archs), under one
reference point for all. LINAS (NSGA-II on predictors, the `evolve` default) is measured at its default
round size and inner budget, at half the round size and at four times the inner budget, with its
predictors' Kendall tau and MAPE on each round's new archs.
With the latency objective, the same searches run on the bench run's uniform `tiny` sub-space (128
archs, so its exhaustive front is the best-known one). Also: the heterogeneity gain
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
from autodistil_evo.search.algorithms import DEFAULT_INNER_EVALUATIONS, make_search
from autodistil_evo.search.evaluator import ProxyEvaluator
from autodistil_evo.search.pareto import hypervolume, objective_matrix
from autodistil_evo.search.problem import SubspaceProblem
from autodistil_evo.spaces import Arch

OBJECTIVES = ["loss", "flops"]
# label -> (algorithm, operators, population; None = --population)
# label -> (algorithm, operators, population, LINAS inner evaluations; None = the defaults)
SEARCHES = {
    "NSGA-II (ux-reset)": ("nsga2", "ux-reset", None, None),
    "LINAS": ("linas", "ux-reset", None, None),
    "LINAS (half rounds)": ("linas", "ux-reset", "half", None),  # twice the rounds for the same budget
    "LINAS (4x inner)": ("linas", "ux-reset", None, 4),  # four times the inner NSGA-II's predicted evaluations
    "random": ("random", None, None, None),
}
PLAIN, LINAS = "NSGA-II (ux-reset)", "LINAS"


def run_search(algorithm, operators, problem, population, budget, seed, quality=None, inner=DEFAULT_INNER_EVALUATIONS):
    """Records of the first `budget` distinct archs, in the order the search evaluated them; LINAS's
    per-round predictor quality is appended to `quality`."""
    search = make_search(algorithm, problem, population, seed, operators or "ux-reset", inner)
    seen, rows = set(), []
    for _ in range(8 * budget // population):  # NSGA-II may re-propose archs it saw (cache hits): cap it
        if len(seen) >= budget:
            break
        pop = search.ask()
        if pop is None:
            break
        search.evaluate(pop)
        search.tell(pop)
        if quality is not None and search.report()["predictor"][-1]["predictors"]:
            quality.append(search.report()["predictor"][-1]["predictors"])
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


def compare(problem, known, budgets, seeds, population, objectives, inner):
    """Every search of SEARCHES for `seeds` seeds up to max(budgets) distinct archs; HV ratios against the
    best-known front (the union of every run's archs and the `known` ones) at each budget."""
    runs, quality = {label: [] for label in SEARCHES}, []
    start = time.perf_counter()
    for label, (algorithm, operators, pop, inner_factor) in SEARCHES.items():
        for seed in range(seeds):
            runs[label].append(run_search(algorithm, operators, problem, population // 2 if pop == "half" else population,
                                          max(budgets), seed, quality if label == LINAS else None,
                                          inner * (inner_factor or 1)))
            print(f"{label} seed {seed}: {len(runs[label][-1])} distinct archs", flush=True)
    seconds = time.perf_counter() - start
    union = list({r["key"]: r for r in known + [r for rs in runs.values() for rows in rs for r in rows]}.values())
    reference = list(1.1 * objective_matrix(union, objectives).max(axis=0))
    best_hv = hypervolume(union, objectives, reference)

    def ratio(rows):
        return hypervolume(rows, objectives, reference) / best_hv

    def to_099(rows):
        """Distinct evaluations until 0.99 of the best-known HV (None: not within the budget)."""
        step = max(1, budgets[0] // 10)
        for n in range(step, len(rows) + 1, step):
            if ratio(rows[:n]) >= 0.99:  # checked every `step` evaluations
                return n
        return None

    results, table = {}, []
    for label, seed_rows in runs.items():
        at = {b: [ratio(rows[:b]) for rows in seed_rows] for b in budgets}
        reach = [to_099(rows) for rows in seed_rows]
        results[label] = {
            "hv_ratio": {str(b): {"mean": statistics.mean(v), "min": min(v), "max": max(v), "per_seed": v,
                                  "seeds_at_0.99": sum(x >= 0.99 for x in v)} for b, v in at.items()},
            "evaluations_to_0.99": reach,
        }
        reached = [r for r in reach if r is not None]
        table.append((label, *(f"{statistics.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in at.values()),
                      f"{len(reached)}/{len(reach)} seeds" + (f", mean {statistics.mean(reached):.0f}" if reached else "")))
    columns = problem.measured_columns()
    results[LINAS]["predictor_quality"] = {c: {
        "rounds": len(quality),
        "kendall_tau_mean": statistics.mean(t) if (t := [q[c]["kendall_tau"] for q in quality if q[c]["kendall_tau"] is not None]) else None,
        "mape_mean": statistics.mean(q[c]["mape"] for q in quality),
        "models": dict(sorted({m: [q[c]["model"] for q in quality].count(m) for m in {q[c]["model"] for q in quality}}.items())),
    } for c in columns} if quality else None
    middle, last = str(budgets[-2]), budgets[-1]
    goals = {
        "linas_0.99_within_last_in_4_of_5": sum(r is not None for r in results[LINAS]["evaluations_to_0.99"]) >= 4,
        f"linas_0.99_at_{middle}_in_4_of_5": results[LINAS]["hv_ratio"][middle]["seeds_at_0.99"] >= 4,
        "linas_mean_at_middle_above_nsga2": results[LINAS]["hv_ratio"][middle]["mean"] > results[PLAIN]["hv_ratio"][middle]["mean"],
        "linas_mean_never_below_nsga2": all(results[LINAS]["hv_ratio"][str(b)]["mean"] >= results[PLAIN]["hv_ratio"][str(b)]["mean"]
                                            for b in budgets),
    }
    return {"runs": runs, "union": union, "reference": reference, "best_hv": best_hv, "ratio": ratio, "results": results,
            "table": table, "seconds": seconds, "goals": goals, "middle": middle, "last": last}


def predictor_line(results) -> str:
    quality = results[LINAS]["predictor_quality"]
    if not quality:
        return ""
    return "LINAS's predictors on each round's new archs (measured after they were proposed), mean over rounds and seeds: " + "; ".join(
        f"{c}: Kendall tau {q['kendall_tau_mean']:.2f}, MAPE {q['mape_mean']:.1%} (models picked: "
        + ", ".join(f"{m} x{n}" for m, n in q["models"].items()) + ")" for c, q in quality.items()) + "."


def latency_study(args):
    """Proxy loss x measured latency on the bench run's uniform `tiny` sub-space (exhaustive front known)."""
    from common import BENCH_RECIPE, BENCH_RUN

    run_dir = ensure_run(BENCH_RUN, BENCH_RECIPE, extra=("--subspace", "tiny"), subspaces=("tiny",))  # the rest: not needed here
    trained = load_superlm(f"{run_dir}/tiny")
    _, problem, _ = _problem(trained, args.eval_samples, ["loss", "latency"], latency=True)
    start = time.perf_counter()
    everything = [{**r, "key": a.key()} for a, r in zip(list(trained.subspace.candidates()),
                                                       problem.records(list(trained.subspace.candidates())))]
    per_eval = (time.perf_counter() - start) / len(everything)
    budgets = tuple(int(b) for b in args.latency_budgets.split(","))
    found = compare(problem, everything, budgets, args.seeds, args.latency_population, ["loss", "latency"], args.inner_evaluations)
    return found, {"subspace": "tiny", "candidates": len(everything), "budgets": list(budgets), "population": args.latency_population,
                   "seconds_per_evaluation": per_eval, "runtime": "torch, CPU, batch 1"}


def _problem(trained, eval_samples, objectives, latency=False):
    from autodistil_evo.teacher import load_teacher

    meta = trained.meta
    teacher = load_teacher(meta["teacher"]["spec"])
    packed = open_run_corpus(meta.get("corpus_store"), meta["corpus"], teacher.tokenizer, meta["seq_len"], meta["heldout_fraction"])
    heldout = proxy_sample(packed.heldout, eval_samples)  # the proxy set `evolve` uses
    evaluator = ProxyEvaluator(trained.superlm, teacher.model, heldout, meta["relation_heads"], meta["teacher_layer"],
                               measure_latency_too=latency)
    dims = trained.space.dims(trained.teacher_shape)
    return evaluator, SubspaceProblem(trained.subspace, dims, trained.space.seq_len, evaluator, objectives, []), {**meta, "blocks": len(heldout)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default=str(WORK / "quickstart-layerwise-run"))
    parser.add_argument("--subspace", default="small")
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--budgets", default="50,100,200,400", help="Distinct evaluations to compare at (the last is each run's length).")
    parser.add_argument("--latency-budgets", default="16,32,64", help="The same, for the latency study on `tiny`.")
    parser.add_argument("--latency-population", type=int, default=8)
    parser.add_argument("--inner-evaluations", type=int, default=DEFAULT_INNER_EVALUATIONS, help="LINAS's, per round")
    args = parser.parse_args()
    budgets = tuple(int(b) for b in args.budgets.split(","))
    run_dir = ensure_run(args.run_dir, extra=("--space", "spaces/minilm-l6-layerwise.yaml", "--subspace", args.subspace),
                         subspaces=(args.subspace,))
    trained = load_superlm(f"{run_dir}/{args.subspace}")
    sub = trained.subspace
    evaluator, problem, meta = _problem(trained, args.eval_samples, OBJECTIVES)

    # The 128 uniform archs of the same SuperLM, evaluated exhaustively.
    start = time.perf_counter()
    uniform_archs = [Arch(*c) for c in itertools.product(sub.layers, sub.heads, sub.hidden, sub.mlp_ratio)]
    uniform = [{**r, "key": a.key()} for a, r in zip(uniform_archs, problem.records(uniform_archs))]
    uniform_seconds = (time.perf_counter() - start) / len(uniform)

    found = compare(problem, uniform, budgets, args.seeds, args.population, OBJECTIVES, args.inner_evaluations)
    results, ratio, middle = found["results"], found["ratio"], found["middle"]
    best_linas = max((label for label in SEARCHES if label.startswith("LINAS")), key=lambda k: results[k]["hv_ratio"][middle]["mean"])
    searched_hv = [ratio(rows) for rows in found["runs"][LINAS]]
    uniform_hv = ratio(uniform)
    latency, latency_meta = latency_study(args)

    sample = [sub.sample(np.random.default_rng(i)) for i in range(6)]
    costs = proxy_cost_ratios(trained, evaluator, sample)
    data = {
        "subspace": args.subspace, "candidates": sub.candidate_count(), "seeds": args.seeds, "population": args.population,
        "inner_evaluations": args.inner_evaluations, "budgets": list(budgets), "proxy_blocks": meta["blocks"],
        "seq_len": meta["seq_len"], "superlm_steps": meta["step"], "reference_point": found["reference"],
        "best_known_hv": found["best_hv"], "best_known_archs": len(found["union"]), "searches": results,
        "goals": {**found["goals"], "best_linas_setting_at_middle": best_linas},
        "heterogeneity": {"uniform_exhaustive_hv_ratio": uniform_hv, "per_layer_searched_hv_ratio_mean": statistics.mean(searched_hv),
                          "per_layer_searched_hv_ratio_min": min(searched_hv), "uniform_archs": len(uniform)},
        "seconds_per_evaluation": uniform_seconds, "search_seconds": found["seconds"],
        "proxy_cost_ratio": {"median": statistics.median(costs), "max": max(costs)},
        "latency": {**latency_meta, "reference_point": latency["reference"], "best_known_hv": latency["best_hv"],
                    "searches": latency["results"], "goals": latency["goals"], "search_seconds": latency["seconds"]},
    }
    write_results("search_quality", data)
    seeds = f"{args.seeds} seeds"
    header = [f"search ({seeds})", *(f"HV / best-known at {b} evals, mean (min-max)" for b in budgets), f"0.99 of best-known within {max(budgets)}"]
    lat_budgets = latency_meta["budgets"]
    lat_header = [f"search ({seeds})", *(f"HV / best at {b} evals" for b in lat_budgets), f"0.99 of best within {max(lat_budgets)}"]
    verdict = lambda ok: "met" if ok else "not met"  # noqa: E731
    at_middle = results[LINAS]["hv_ratio"][middle]
    write_section(
        "search_quality",
        f"## Search quality (per-layer space)\n\nMachine: {machine()}. Sub-space `{args.subspace}` of "
        f"`spaces/minilm-l6-layerwise.yaml` ({sub.candidate_count():,} archs), SuperLM trained by the quickstart recipe "
        f"({meta['step']} steps); proxy set {meta['blocks']} held-out blocks of {meta['seq_len']} tokens (seeded uniform sample, as `evolve`); objectives proxy "
        f"loss x FLOPs; population {args.population} (LINAS: archs measured per round; its inner NSGA-II on the predictors "
        f"runs {args.inner_evaluations} predicted evaluations from the measured front and the last round's predicted front; "
        f"*half rounds*: {args.population // 2} archs a round, *4x inner*: {4 * args.inner_evaluations} predicted evaluations); "
        f"seeds 0-{args.seeds - 1}. HV is measured against the best-known "
        f"front (union of every run's {len(found['union']):,} distinct archs and the 128 uniform ones) with one reference point "
        f"(1.1 x the worst value of each objective in that union). One evaluation: {uniform_seconds * 1e3:.0f} ms; "
        f"all searches {found['seconds'] / 60:.1f} min (a shared cache: an arch is evaluated once).\n\n"
        f"Command: `{command()}`\n\n{markdown_table(header, found['table'])}\n\n"
        f"Goal: LINAS (the `evolve` default) at 0.99 of the best-known HV within {middle} evaluations in at least 4 of "
        f"{args.seeds} seeds: **{verdict(found['goals'][f'linas_0.99_at_{middle}_in_4_of_5'])}** ({at_middle['seeds_at_0.99']} "
        f"seeds; mean {at_middle['mean']:.3f}, min {at_middle['min']:.3f}). LINAS's mean HV at or above NSGA-II's at every "
        f"count: **{verdict(found['goals']['linas_mean_never_below_nsga2'])}**. The best LINAS setting at {middle} "
        f"evaluations: {best_linas}. {predictor_line(results)}\n\n"
        f"With the latency objective (proxy loss x CPU latency at batch 1, measured once per arch and shared by every search), "
        f"on the bench run's uniform `tiny` sub-space ({latency_meta['candidates']} archs, all measured: the best-known front "
        f"is the exact one; {latency_meta['seconds_per_evaluation'] * 1e3:.0f} ms per evaluation with its latency; LINAS ranks "
        f"every candidate by its predictors here, the sub-space being smaller than its inner budget), "
        f"population {args.latency_population}:\n\n{markdown_table(lat_header, latency['table'])}\n\n"
        f"Goal: LINAS's mean HV at or above NSGA-II's at every count: "
        f"**{verdict(latency['goals']['linas_mean_never_below_nsga2'])}**; 0.99 within {max(lat_budgets)} in at least 4 of "
        f"5 seeds: **{verdict(latency['goals']['linas_0.99_within_last_in_4_of_5'])}**. {predictor_line(latency['results'])}\n\n"
        f"Heterogeneity gain on the same SuperLM: the exhaustive front of its 128 uniform archs reaches "
        f"{uniform_hv:.3f} of the best-known HV; the per-layer fronts LINAS found in {max(budgets)} evaluations "
        f"reach {statistics.mean(searched_hv):.3f} (min {min(searched_hv):.3f}).\n\n"
        f"Proxy evaluation cost / bare forward of the extracted subnet on the same batches: median "
        f"{statistics.median(costs):.3f}, max {max(costs):.3f} over {len(costs)} heterogeneous archs (goal <= 1.25).\n",
    )


if __name__ == "__main__":
    main()
