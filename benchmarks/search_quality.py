"""Search quality on a trained sub-space: NSGA-II and random search vs. the exhaustive front.

Budget: the same number of distinct evaluated archs (<= 25% of the sub-space) for NSGA-II and
random, several seeds. Reports hypervolume ratios to the exhaustive front (one reference point for
all), the evaluations NSGA-II needs to reach 0.99 of the exhaustive HV, and the cost of one proxy
evaluation relative to a bare forward of the extracted subnet on the same batches (goal <= 1.25).
"""

import argparse
import statistics
import time

import torch
from common import WORK, ensure_run
from report import command, machine, markdown_table, write_section

from autodistil_evo.data import build_corpus
from autodistil_evo.distill.artifact import load_superlm
from autodistil_evo.search.algorithms import make_search
from autodistil_evo.search.evaluator import ProxyEvaluator
from autodistil_evo.search.pareto import hypervolume, objective_matrix
from autodistil_evo.search.problem import SubspaceProblem, decode
from autodistil_evo.teacher import load_teacher

OBJECTIVES = ["loss", "flops"]


def run_algorithm(name, problem, population, budget, seed, reference):
    """Distinct archs evaluated and HV after each generation, until `budget` distinct archs."""
    search = make_search(name, problem, population, seed)
    seen, rows, curve = set(), [], []
    # NSGA-II may keep proposing archs it has seen (cache hits): cap the generations.
    for _ in range(8 * budget // population):
        if len(seen) >= budget:
            break
        pop = search.ask()
        if pop is None:
            break
        search.evaluate(pop)
        search.tell(pop)
        archs = [decode(problem.subspace, x) for x in pop.get("X")]
        for arch, record in zip(archs, problem.records(archs)):
            if arch.key() not in seen and len(seen) < budget:
                seen.add(arch.key())
                rows.append(record)
        curve.append((len(seen), hypervolume(rows, OBJECTIVES, reference)))
    return curve


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default=str(WORK / "quickstart-run"))
    parser.add_argument("--subspace", default="small")
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--population", type=int, default=8)
    args = parser.parse_args()
    run_dir = ensure_run(args.run_dir)
    trained = load_superlm(f"{run_dir}/{args.subspace}")
    meta = trained.meta
    teacher = load_teacher(meta["teacher"]["spec"])
    heldout = build_corpus(meta["corpus"], teacher.tokenizer, meta["seq_len"], meta["heldout_fraction"]).heldout[: args.eval_samples]
    evaluator = ProxyEvaluator(trained.superlm, teacher.model, heldout, meta["relation_heads"], meta["teacher_layer"])
    dims = trained.space.dims(trained.teacher_shape)
    problem = SubspaceProblem(trained.subspace, dims, trained.space.seq_len, evaluator, OBJECTIVES, [])

    candidates = trained.subspace.candidates()
    start = time.perf_counter()
    everything = problem.records(candidates)  # the exhaustive search, and the shared cache
    exhaustive_seconds = time.perf_counter() - start
    reference = list(1.1 * objective_matrix(everything, OBJECTIVES).max(axis=0))
    hv_exhaustive = hypervolume(everything, OBJECTIVES, reference)
    budget = len(candidates) // 4

    results = {}
    for name in ("nsga2", "random"):
        finals, reach = [], []
        for seed in range(args.seeds):
            curve = run_algorithm(name, problem, args.population, budget, seed, reference)
            finals.append(curve[-1][1] / hv_exhaustive)
            if name == "nsga2":
                long_curve = run_algorithm(name, problem, args.population, len(candidates), seed, reference)
                reach.append(next((n for n, hv in long_curve if hv >= 0.99 * hv_exhaustive), None))
        results[name] = (finals, reach)

    # Cost of one proxy evaluation vs. a bare forward of the extracted subnet on the same batches.
    ratios = []
    for arch in candidates[:: max(len(candidates) // 6, 1)]:
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

    nsga_final, nsga_reach = results["nsga2"]
    random_final, _ = results["random"]
    reached = [r for r in nsga_reach if r is not None]
    rows = [
        ("exhaustive", len(candidates), "1.000", "-"),
        ("NSGA-II", budget, f"{statistics.mean(nsga_final):.3f} (min {min(nsga_final):.3f})",
         f"{statistics.mean(reached):.0f} ({len(reached)}/{len(nsga_reach)} seeds)" if reached else "not reached"),
        ("random", budget, f"{statistics.mean(random_final):.3f} (min {min(random_final):.3f})", "-"),
    ]
    table = markdown_table(["search", "distinct evaluations", "HV / exhaustive HV (mean of seeds)", "evaluations to 0.99 HV"], rows)
    cost = f"median {statistics.median(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} archs"
    write_section(
        "search_quality",
        f"## Search quality\n\nMachine: {machine()}. Sub-space `{args.subspace}` of the quickstart run "
        f"({len(candidates)} candidates, proxy set {len(heldout)} held-out blocks of {meta['seq_len']} tokens), "
        f"NSGA-II population {args.population}, {args.seeds} seeds, objectives proxy loss x FLOPs; one reference "
        f"point (1.1 x the worst exhaustive value of each objective). Exhaustive evaluation took "
        f"{exhaustive_seconds:.1f} s.\n\nCommand: `{command()}`\n\n{table}\n\n"
        f"Proxy evaluation cost / bare forward of the extracted subnet on the same batches: {cost} (goal <= 1.25).\n",
    )


if __name__ == "__main__":
    main()
