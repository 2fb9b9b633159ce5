"""`autodistil-evo evolve`: search each trained SuperLM, then take the global Pareto set across them.

SEARCH_DIR holds `search.json` (what the search is: resuming a different one is refused),
`state/<subspace>.json` (written atomically after every generation: algorithm state, evaluation
cache, history, hypervolume), `history.jsonl`, `pareto.json`, `pareto.csv`, `hypervolume.json`
and `pareto.png`.
"""

import os
import signal
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from autodistil_evo.bounds import parse_bound
from autodistil_evo.distill.artifact import load_superlm, trained_subspaces
from autodistil_evo.distributed import mean_across_ranks
from autodistil_evo.errors import UserError
from autodistil_evo.faults import maybe_die
from autodistil_evo.fileio import directory_lock, prepare_output_dir, read_json, reported_write, write_json, write_jsonl
from autodistil_evo.search.algorithms import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    DEFAULT_INNER_EVALUATIONS,
    DEFAULT_OPERATORS,
    OPERATORS,
    inner_population,
    make_search,
)
from autodistil_evo.search.evaluator import ProxyEvaluator
from autodistil_evo.search.pareto import front_row, hypervolume, non_dominated, plot_front, write_front
from autodistil_evo.search.problem import BOUND_NAMES, COLUMN, OBJECTIVES, SubspaceProblem
from autodistil_evo.spaces import count_flops, count_params
from autodistil_evo.stopping import StopRequest
from autodistil_evo.supernet.latency import require_onnx, resolve_device

STATE_SCHEMA = 1


PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SearchSettings:
    subspace: str = "all"
    population: int = 16
    generations: int = 5
    objectives: list = field(default_factory=lambda: ["loss", "flops"])
    constraints: list = field(default_factory=list)
    algorithm: str | None = None  # None: DEFAULT_ALGORITHM, or on --resume the algorithm the search was made with
    operators: str = DEFAULT_OPERATORS
    inner_evaluations: int = DEFAULT_INNER_EVALUATIONS  # linas: predictor evaluations per round
    latency_runtime: str = "torch"
    latency_device: str = "cpu"  # torch runtime: where latencies are measured
    fidelity_sentences: int = 256  # with the fidelity objective: sentences its Spearman is measured on
    eval_samples: int = 64
    seed: int = 0
    resume: bool = False
    precision: str = "fp32"  # SuperLM and teacher in this dtype for the proxy (relations and KL stay fp32)


def _with_algorithm(settings: SearchSettings, search_dir) -> SearchSettings:
    """Settings whose algorithm is chosen: as given; else, resuming, the search's own (searches from before
    LINAS was the default were NSGA-II); else `DEFAULT_ALGORITHM`."""
    if settings.algorithm is not None:
        return settings
    identity_file = Path(search_dir) / "search.json"
    if settings.resume and identity_file.is_file():
        return replace(settings, algorithm=read_json(identity_file, "search description").get("algorithm", "nsga2"))
    return replace(settings, algorithm=DEFAULT_ALGORITHM)


def _validate(settings: SearchSettings):
    for name in settings.objectives:
        if name not in OBJECTIVES:
            raise UserError(f"--objectives: unknown objective '{name}' (known: {', '.join(OBJECTIVES)})")
    if len(set(settings.objectives)) != len(settings.objectives) or not settings.objectives:
        raise UserError("--objectives: give one or more distinct objectives, e.g. loss,flops")
    if settings.algorithm not in ALGORITHMS:
        raise UserError(f"--algorithm: unknown '{settings.algorithm}' (known: {', '.join(ALGORITHMS)})")
    if settings.latency_runtime not in ("torch", "onnxruntime"):
        raise UserError(f"--latency-runtime: unknown '{settings.latency_runtime}' (known: torch, onnxruntime)")
    if settings.latency_runtime == "onnxruntime" and _measures_latency(settings):
        require_onnx()
    if _measures_latency(settings):
        resolve_device(settings.latency_device, "--latency-device")
        if settings.latency_device != "cpu" and settings.latency_runtime != "torch":
            raise UserError(f"--latency-device {settings.latency_device}: only with --latency-runtime torch")
    if settings.operators not in OPERATORS:
        raise UserError(f"--operators: unknown '{settings.operators}' (known: {', '.join(OPERATORS)})")
    if settings.precision not in PRECISION_DTYPES:
        raise UserError(f"--precision: unknown '{settings.precision}' (known: {', '.join(PRECISION_DTYPES)})")
    if settings.precision == "fp16" and not torch.cuda.is_available():
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32")
    if "fidelity" in settings.objectives and settings.fidelity_sentences < 20:
        raise UserError(f"--fidelity-sentences: {settings.fidelity_sentences} is too few (at least 20)")
    if settings.population < 2 or settings.generations < 1 or settings.eval_samples < 1:
        raise UserError("--population must be >= 2, --generations and --eval-samples >= 1")
    if settings.algorithm == "linas" and settings.inner_evaluations < inner_population(settings.population):
        raise UserError(f"--inner-evaluations: {settings.inner_evaluations} is below the inner NSGA-II's population of "
                        f"{inner_population(settings.population)} (2 x --population, at least 50)")
    return [parse_bound(c, BOUND_NAMES, "--constraint") for c in settings.constraints]


def _measures_latency(settings: SearchSettings) -> bool:
    return "latency" in settings.objectives or any(c.strip().lower().startswith("latency") for c in settings.constraints)


def latency_machine(runtime: str, device: str = "cpu") -> dict:
    """Where latencies were measured: they hold for that machine, runtime and device only."""
    import platform

    import torch

    where = {"runtime": runtime, "machine": platform.machine(), "processor": platform.processor() or "unknown",
             "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device != "cpu":  # searches from before --latency-device measured on the CPU and keep their identity
        where["device"] = torch.cuda.get_device_name(0)
    return where


def _identity(settings: SearchSettings, superlms: list) -> dict:
    """Everything that defines the search problem; --generations may grow on resume."""
    d = asdict(settings)
    d.pop("generations")
    d.pop("resume")
    if settings.precision == "fp32":  # searches written before --precision existed were fp32
        d.pop("precision")
    d.pop("latency_device")  # in latency_measured_on, where it counts
    if "fidelity" not in settings.objectives:
        d.pop("fidelity_sentences")
    if settings.algorithm != "linas":
        d.pop("inner_evaluations")
    if _measures_latency(settings):  # measured latencies from another machine, runtime or device do not mix
        d["latency_measured_on"] = latency_machine(settings.latency_runtime, settings.latency_device)
    else:
        d.pop("latency_runtime")
    d["superlms"] = {t.subspace.name: t.meta["sha256"] for t in superlms}
    d["proxy_set"] = "seeded uniform sample (seed 0) of the held-out blocks"  # before 0.2: the first N blocks
    return d


def _common_data(superlms) -> dict:
    """The SuperLMs of one search must share the teacher and the data their proxy loss is measured on."""
    first = superlms[0]
    for other in superlms[1:]:
        for what, value in (("teacher", lambda m: m["teacher"]["spec"]),
                            ("corpus", lambda m: (m.get("corpus_store") or {}).get("fingerprint", m["corpus"])),
                            ("seq_len", lambda m: m["seq_len"])):
            if value(other.meta) != value(first.meta):
                raise UserError(f"{other.path}: trained with another {what} than {first.path} "
                                f"({value(other.meta)!r} vs {value(first.meta)!r}); search them separately")
    return first.meta


def _analytic_minimum(trained, bound):
    """Smallest FLOPs/params in the sub-space (None for measured quantities): its smallest arch's."""
    if bound.name not in ("flops", "params"):
        return None
    dims = trained.space.dims(trained.teacher_shape)
    smallest = trained.subspace.smallest()
    return count_flops(smallest, dims, trained.space.seq_len) if bound.name == "flops" else count_params(smallest, dims)


def _unreachable_bound(trained, bounds):
    for bound in bounds:
        minimum = _analytic_minimum(trained, bound)
        if minimum is not None and bound.op in ("<=", "<") and not bound.holds(minimum):
            return bound, minimum
    return None


def _infeasible_message(rows, bounds) -> str:
    """Name the bound that is hardest to meet: the largest violation of the closest candidate."""
    best = min(rows, key=lambda r: max(b.violation(float(r[b.name])) for b in bounds))
    worst = max(bounds, key=lambda b: b.violation(float(best[b.name])))
    return (
        f"no candidate satisfies the constraints; tightest bound {worst}: the closest candidate "
        f"({best['subspace']} {best['key']}) has {worst.name} = {float(best[worst.name]):.4g}"
    )


def run_search(run_dir, search_dir, settings: SearchSettings, console) -> dict:
    from autodistil_evo.data import open_run_corpus, proxy_sample
    from autodistil_evo.distributed import init_distributed
    from autodistil_evo.teacher import load_teacher

    settings = _with_algorithm(settings, search_dir)
    bounds = _validate(settings)
    rank = init_distributed()[0] if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    is_main = rank == 0
    log = console.print if is_main else (lambda *a, **k: None)
    folders = trained_subspaces(run_dir)
    if settings.subspace != "all":
        folders = [f for f in folders if f.name == settings.subspace]
        if not folders:
            raise UserError(f"{run_dir}: no trained SuperLM for sub-space '{settings.subspace}'")
    superlms = [load_superlm(f) for f in folders]
    meta = _common_data(superlms)
    teacher = load_teacher(meta["teacher"]["spec"])
    packed = open_run_corpus(meta.get("corpus_store"), meta["corpus"], teacher.tokenizer, meta["seq_len"], meta["heldout_fraction"])
    heldout = proxy_sample(packed.heldout, settings.eval_samples)
    fidelity_set = _fidelity_set(settings, teacher)  # the same sentences for every sub-space, read once

    search_dir = prepare_output_dir(search_dir, "search directory")
    identity = _identity(settings, superlms)
    identity_file = search_dir / "search.json"
    if any((search_dir / "state").glob("*.json")) and not settings.resume:
        raise UserError(f"{search_dir}: holds an earlier search; pass --resume to continue it or choose another --out")
    if identity_file.exists() and settings.resume:
        previous = read_json(identity_file, "search description")
        differs = [k for k in sorted(set(identity) | set(previous)) if identity.get(k) != previous.get(k)]
        if differs:
            raise UserError(f"{identity_file}: cannot resume, the problem differs in: {', '.join(differs)}")

    lock = directory_lock(search_dir, warn=log) if is_main else nullcontext()
    all_rows, summaries = {}, []
    with lock, StopRequest() as stop:
        if is_main:
            write_json(identity_file, identity)
        for trained in superlms:
            unreachable = _unreachable_bound(trained, bounds)
            if unreachable:
                bound, minimum = unreachable
                log(f"sub-space {trained.subspace.name}: skipped, its smallest {bound.name} is {minimum:.4g}, which breaks {bound}")
                continue
            summaries.append(_search_subspace(trained, teacher, heldout, fidelity_set, settings, bounds, search_dir, all_rows,
                                              is_main, console, stop))
            if summaries[-1]["stopped_by"] is not None:  # its state after the last whole generation is written
                last = summaries[-1]
                return {"interrupted": True, "signal": last["stopped_by"], "subspace": last["subspace"],
                        "generation": last["generations"], "state": str(search_dir / "state" / f"{last['subspace']}.json")}
        rows = [r for rows in all_rows.values() for r in rows]
        if not rows:
            raise UserError(
                "no sub-space can meet the constraints: " + "; ".join(f"{b}" for b in bounds) + " (see the messages above)"
            )
        unique = list({(r["subspace"], r["key"]): r for r in rows}.values())
        front = [front_row(r) for r in non_dominated(unique, settings.objectives)]
        if not front:
            raise UserError(_infeasible_message(unique, bounds))
        if is_main:
            write_jsonl(search_dir / "history.jsonl", rows)
            teacher_arch, teacher_dims = teacher.shape.arch(), teacher.shape.dims()
            write_front(search_dir, front, {
                "run_dir": str(Path(run_dir).resolve()),
                "objectives": settings.objectives,
                "constraints": [str(b) for b in bounds],
                "seq_len": superlms[0].space.seq_len,
                "teacher": {"name": teacher.shape.name, "params": count_params(teacher_arch, teacher_dims),
                            "flops": count_flops(teacher_arch, teacher_dims, superlms[0].space.seq_len)},
            })
            write_json(search_dir / "hypervolume.json", summaries)
            plot_front(unique, front, settings.objectives, search_dir / "pareto.png",
                       f"{superlms[0].space.name}: {len(unique)} archs evaluated, global front of {len(front)}")
    return {"front": front, "summaries": summaries, "interrupted": False}


def _search_subspace(trained, teacher, heldout, fidelity_set, settings, bounds, search_dir, all_rows, is_main,
                     console, stop) -> dict:
    """Run (or resume) one sub-space's search; after every generation its state is written atomically. A stop
    signal (`stop`, on any rank) ends it after the generation under way, its state written."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    log = console.print if is_main else (lambda *a, **k: None)
    name, meta = trained.subspace.name, trained.meta
    state_file = search_dir / "state" / f"{name}.json"
    state = read_json(state_file, "search state") if state_file.exists() and settings.resume else None
    if state is not None and state.get("schema") != STATE_SCHEMA:
        raise UserError(f"{state_file}: search state schema {state.get('schema')!r} != {STATE_SCHEMA}")
    evaluator = ProxyEvaluator(
        trained.superlm, teacher.model, heldout, meta["relation_heads"], meta["teacher_layer"],
        measure_latency_too=_measures_latency(settings),
        cache=dict(state["cache"]) if state else None, latency_runtime=settings.latency_runtime,
        latency_device=settings.latency_device, fidelity_set=fidelity_set,
        dtype=PRECISION_DTYPES[settings.precision],
    )
    dims = trained.space.dims(trained.teacher_shape)
    problem = SubspaceProblem(trained.subspace, dims, trained.space.seq_len, evaluator, settings.objectives, bounds)
    algorithm = _algorithm_for(trained.subspace, settings, state, log)
    search = make_search(algorithm, problem, settings.population, settings.seed, settings.operators, settings.inner_evaluations)
    history, hv, reference, generation, stopped_by = [], [], None, 0, None
    if state:
        search.restore(state["algorithm"])
        history, hv, reference, generation = state["history"], state["hv"], state["reference"], state["generation"]
        log(f"resuming {name} after generation {generation}")
    progress = Progress(
        TextColumn(f"[bold]{name}[/] gen"), BarColumn(), MofNCompleteColumn(),
        TextColumn("evals {task.fields[evals]} (cache hits {task.fields[hits]})"),
        TextColumn("HV {task.fields[hv]:.4f}"), TimeRemainingColumn(),
        console=console, disable=not is_main,
    )
    with progress:
        task = progress.add_task("evolve", total=settings.generations, completed=generation,
                                 evals=len(history), hits=evaluator.hits, hv=hv[-1] if hv else 0.0)
        while generation < settings.generations:
            pop = search.ask()
            if pop is None:
                log(f"{name}: no new candidates left after generation {generation}")
                break
            search.evaluate(pop)
            search.tell(pop)
            generation += 1
            archs = [trained.subspace.decode(x) for x in pop.get("X")]
            predicted = search.predictions() or [None] * len(archs)  # linas: what its predictors said of these archs
            # pymoo just evaluated these: read the cache without counting the reads as cache hits
            for arch, record, guess in zip(archs, problem.records(archs, count_hits=False), predicted):
                history.append({
                    "generation": generation, "subspace": name, "key": arch.key(), "arch": arch.to_dict(),
                    **record, "feasible": all(b.holds(float(record[b.name])) for b in bounds),
                    **({"predicted": guess} if guess else {}),
                })
            if reference is None:  # fixed once, from the first generation, and recorded
                first = [r for r in history if r["generation"] == 1]
                reference = [1.1 * max(float(r[COLUMN[o]]) for r in first) for o in settings.objectives]
            hv.append(hypervolume(history, settings.objectives, reference))
            all_rows[name] = history
            if is_main:
                with reported_write(state_file, f"the search state after generation {generation}",
                                    after="the state of the generation before is intact; free space and --resume"):
                    write_json(state_file, {
                        "schema": STATE_SCHEMA, "generation": generation, "algorithm_name": algorithm,
                        "algorithm": search.state(), "cache": evaluator.cache, "history": history, "hv": hv,
                        "reference": reference,
                    })
                    write_jsonl(search_dir / "history.jsonl", [r for rows in all_rows.values() for r in rows])
            progress.update(task, completed=generation, evals=len(history), hits=evaluator.hits, hv=hv[-1])
            maybe_die("search-generation", generation)
            if mean_across_ranks([float(stop.requested)])[0] > 0:
                stopped_by = int(stop.signum or signal.SIGTERM)
                break
    all_rows[name] = history
    return {"subspace": name, "algorithm": algorithm, "generations": generation, "stopped_by": stopped_by,
            "evaluations": len(history),
            "unique": len({r["key"] for r in history}), "hv": hv, "reference": reference,
            "objectives": settings.objectives, **search.report()}


def _fidelity_set(settings: SearchSettings, teacher):
    """(texts, tokenizer, pooling) of the fidelity objective, or None when the search does not measure it."""
    if "fidelity" not in settings.objectives:
        return None
    from autodistil_evo.search.fidelity import fidelity_sentences

    return fidelity_sentences(settings.fidelity_sentences), teacher.tokenizer, teacher.pooling


def _algorithm_for(subspace, settings: SearchSettings, state, log) -> str:
    """NSGA-II or LINAS, unless its budget covers the whole sub-space: then enumerating it is cheaper and exact.

    The choice is recorded in the sub-space's state, so a resume with more --generations keeps it.
    """
    if state is not None:
        return state.get("algorithm_name", settings.algorithm)
    budget = settings.population * settings.generations
    if settings.algorithm in ("nsga2", "linas") and budget >= subspace.candidate_count():
        log(f"{subspace.name}: population x generations = {budget} >= its {subspace.candidate_count()} candidates; "
            f"evaluating all of them instead of evolving")
        return "exhaustive"
    return settings.algorithm
