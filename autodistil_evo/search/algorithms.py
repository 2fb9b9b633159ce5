"""Search algorithms behind one ask / evaluate / tell interface, each with a JSON-able state.

NSGA-II is pymoo's, driven by ask/tell. Its state (population, objective and constraint values,
rank and crowding, RNG) is restored without pickle, in population order, so a resumed search
draws exactly the offspring an uninterrupted one would. `linas` is NSGA-II run on
cheap predictors of the measured objectives, measuring only the front they predict (below).
`random` and `exhaustive` are the baselines on the same problem and budget.

Duplicates are judged by the arch a genome decodes to (its canonical genome), not by the raw
genome: genes past a genome's depth are inactive, and two genomes of one arch are one candidate.

Variation operators (`operators`):
- `ux-reset` (default): uniform crossover + random-reset mutation (each gene, with probability
  1/n_var, takes another of its choices): made for index genes with few choices, where a
  polynomial perturbation mostly rounds back to the same index;
- `sbx-pm`: SBX crossover + polynomial mutation on rounded integers (pymoo's integer recipe).
"""

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.optimize import minimize

from autodistil_evo.search.predictors import Predictor, arch_features, prediction_quality

ALGORITHMS = ("nsga2", "linas", "random", "exhaustive")
# Measured (BENCHMARKS.md, search quality): on the per-layer space LINAS's front at 50-400 evaluations is
# better than NSGA-II's at twice as many; on a 128-arch latency space it trails below 64 evaluations.
DEFAULT_ALGORITHM = "linas"
OPERATORS = ("ux-reset", "sbx-pm")
# Measured on the per-layer quickstart space (BENCHMARKS.md, search quality): ux-reset's front is
# better than sbx-pm's at 100, 200 and 400 evaluations, and above random search's at 200 and 400.
DEFAULT_OPERATORS = "ux-reset"
# LINAS: predictor evaluations per round (DyNAS-T runs its inner NSGA-II for thousands).
DEFAULT_INNER_EVALUATIONS = 5000


def _array_state(a: np.ndarray) -> dict:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.reshape(-1).tolist()}


def _array(state: dict) -> np.ndarray:
    return np.array(state["values"], dtype=state["dtype"]).reshape(state["shape"])


def canonical_genomes(problem, X) -> np.ndarray:
    """Each genome replaced by the genome of the arch it decodes to (inactive genes zeroed)."""
    subspace = problem.subspace
    return np.array([subspace.encode(subspace.decode(x)) for x in X], dtype=float).reshape(len(X), problem.n_var)


def random_unseen(problem, rng, n: int, exclude=()) -> list:
    """`n` canonical genomes (tuples) of distinct random archs not in `exclude`, fewer if the sub-space runs out."""
    sizes, seen, out = [int(u) + 1 for u in problem.xu], set(exclude), []
    want = min(n, problem.subspace.candidate_count() - len(seen))
    while len(out) < want:  # terminates: `want` such archs exist
        x = tuple(canonical_genomes(problem, [[int(rng.integers(k)) for k in sizes]])[0])
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


class DistinctArchSampling(Sampling):
    """The initial population: genomes drawn gene by gene, `n_samples` distinct archs (fewer only if
    the sub-space holds fewer). pymoo's integer sampling drops duplicate archs without replacing
    them, which leaves a small or per-layer sub-space's first generation short."""

    def _do(self, problem, n_samples, random_state=None, **kwargs):
        sizes = (problem.xu - problem.xl + 1).astype(int)
        want = min(n_samples, problem.subspace.candidate_count())
        chosen = {}
        while len(chosen) < want:  # terminates: `want` distinct archs exist
            x = problem.xl + random_state.integers(0, sizes)
            chosen.setdefault(tuple(canonical_genomes(problem, [x])[0]), x)
        return np.array(list(chosen.values()), dtype=float)


class ResetMutation(Mutation):
    """Integer random reset: each gene, with probability `prob_var` (default 1/n_var), takes another value."""

    def _do(self, problem, X, random_state=None, **kwargs):
        X = np.array(X, dtype=float)
        low, sizes = problem.xl, problem.xu - problem.xl + 1
        hit = (random_state.random(X.shape) < float(self.get_prob_var(problem))) & (sizes > 1)
        shift = random_state.integers(1, np.maximum(sizes, 2), size=X.shape)  # 1..size-1: always a new value
        X[hit] = (low + (X - low + shift) % sizes)[hit]
        return X


def _variation(operators: str) -> dict:
    if operators == "sbx-pm":
        return {"crossover": SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                "mutation": PM(eta=20, vtype=float, repair=RoundingRepair())}
    return {"crossover": UniformCrossover(), "mutation": ResetMutation()}


class _Search:
    """What every search offers besides ask / evaluate / tell / state / restore; only LINAS predicts."""

    def predictions(self) -> list | None:
        """Per arch of the last round, what was predicted of it before it was measured (None: nothing)."""
        return None

    def report(self) -> dict:
        """Extra fields of the sub-space's summary."""
        return {}


class NSGA2Search(_Search):
    name = "nsga2"

    def __init__(self, problem, population: int, seed: int, operators: str = DEFAULT_OPERATORS):
        self.problem = problem
        self.algorithm = NSGA2(
            pop_size=population,
            sampling=DistinctArchSampling(),
            **_variation(operators),
            eliminate_duplicates=DefaultDuplicateElimination(func=lambda pop: canonical_genomes(problem, pop.get("X"))),
        )
        self.algorithm.setup(problem, termination=NoTermination(), seed=seed)

    def ask(self):
        pop = self.algorithm.ask()
        return pop if pop is not None and len(pop) else None

    def evaluate(self, pop):
        self.algorithm.evaluator.eval(self.problem, pop)

    def tell(self, pop):
        self.algorithm.tell(infills=pop)

    def state(self) -> dict:
        alg = self.algorithm
        pop = alg.pop
        state = {
            "n_iter": alg.n_iter,
            "n_eval": alg.evaluator.n_eval,
            "random_state": alg.random_state.bit_generator.state,
            "X": _array_state(pop.get("X")),
            "F": _array_state(pop.get("F")),
            "rank": _array_state(pop.get("rank")),
            "crowding": _array_state(pop.get("crowding")),
        }
        if self.problem.n_ieq_constr:
            state["G"] = _array_state(pop.get("G"))
        return state

    def restore(self, state: dict):
        alg = self.algorithm
        values = {"X": _array(state["X"]), "F": _array(state["F"])}
        if "G" in state:
            values["G"] = _array(state["G"])
        pop = Population.new(**values)
        pop.set("rank", _array(state["rank"]), "crowding", _array(state["crowding"]))
        pop.apply(lambda ind: ind.evaluated.update(values.keys()))
        alg.pop = pop
        alg.is_initialized = True
        alg.n_iter = state["n_iter"]
        alg.evaluator.n_eval = state["n_eval"]
        alg._set_optimum()
        alg.random_state.bit_generator.state = state["random_state"]


class _EnumeratingSearch(_Search):
    """Shared by the baselines: propose archs not seen before, `population` at a time, as canonical genomes."""

    def __init__(self, problem, population: int, seed: int, operators: str = None):
        self.problem = problem
        self.population = population
        self.evaluator = Evaluator()
        self.seen = set()

    def ask(self):
        X = self._propose()
        if not len(X):
            return None
        self.seen.update(tuple(int(v) for v in x) for x in X)
        return Population.new(X=np.array(X, dtype=int))

    def evaluate(self, pop):
        self.evaluator.eval(self.problem, pop)

    def tell(self, pop):
        pass

    def state(self) -> dict:
        return {"seen": sorted(list(s) for s in self.seen)}

    def restore(self, state: dict):
        self.seen = {tuple(s) for s in state["seen"]}


class RandomSearch(_EnumeratingSearch):
    name = "random"

    def __init__(self, problem, population: int, seed: int, operators: str = None):
        super().__init__(problem, population, seed)
        self.rng = np.random.default_rng(seed)

    def _propose(self):
        return [list(x) for x in random_unseen(self.problem, self.rng, self.population, self.seen)]

    def state(self) -> dict:
        return {**super().state(), "random_state": self.rng.bit_generator.state}

    def restore(self, state: dict):
        super().restore(state)
        self.rng.bit_generator.state = state["random_state"]


class ExhaustiveSearch(_EnumeratingSearch):
    name = "exhaustive"

    def _propose(self):
        out = []
        for arch in self.problem.subspace.candidates():  # genome order; uniform: np.ndindex order
            if len(out) == self.population:
                break
            x = tuple(self.problem.subspace.encode(arch))
            if x not in self.seen:
                out.append(list(x))
        return out


def inner_population(population: int) -> int:
    """The population of LINAS's inner NSGA-II: room for a round's candidates twice over, 50 at least."""
    return max(50, 2 * population)


def ranked(problem, X) -> np.ndarray:
    """Genomes `X` evaluated on `problem` and ordered as NSGA-II's survival would keep them: feasible ones by
    non-domination rank, then crowding (the spread-out first); then the infeasible, least violating first."""
    pop = Population.new(X=np.array(X, dtype=float))
    Evaluator().eval(problem, pop)
    pop = RankAndCrowding().do(problem, pop, n_survive=len(pop))

    def place(ind):
        violation = float(ind.get("CV")[0])
        return (0, ind.get("rank"), -ind.get("crowding"), 0.0) if violation <= 0 else (1, 0, 0.0, violation)

    return pop.get("X")[sorted(range(len(pop)), key=lambda i: place(pop[i]))]


class PredictedProblem(Problem):
    """A sub-space problem whose measured quantities come from predictors; FLOPs and params stay exact."""

    def __init__(self, problem, predictors: dict):
        self.problem, self.predictors = problem, predictors
        super().__init__(n_var=problem.n_var, n_obj=problem.n_obj, n_ieq_constr=problem.n_ieq_constr,
                         xl=problem.xl, xu=problem.xu, vtype=int)
        self.subspace = problem.subspace  # for DistinctArchSampling and canonical_genomes

    def rows(self, archs) -> list:
        exact = [self.problem.exact(a) for a in archs]
        features = arch_features(self.subspace, archs, exact)
        predicted = {name: predictor.predict(features) for name, predictor in self.predictors.items()}
        return [{**counted, **{name: float(v[i]) for name, v in predicted.items()}} for i, counted in enumerate(exact)]

    def _evaluate(self, X, out, *args, **kwargs):
        self.problem.fill(self.rows([self.subspace.decode(x) for x in X]), out)


class MeasuredProblem(PredictedProblem):
    """The sub-space problem on archs already measured: their recorded values, looked up (no evaluation)."""

    def __init__(self, problem, measured: dict):
        super().__init__(problem, {})
        self.measured = measured  # arch key -> {column: value}

    def rows(self, archs) -> list:
        return [{**self.problem.exact(a), **self.measured[a.key()]} for a in archs]


class LinasSearch(_Search):
    """Predictor-assisted NSGA-II (LINAS, as in Intel's DyNAS-T): each round measures `population` archs
    for real; then predictors of every measured quantity are refit on all measurements so far
    (`predictors.Predictor`) and the next round is the best-ranked unmeasured archs under them. On a
    sub-space of at most `inner_evaluations` archs every candidate is predicted and ranked; on a larger
    one an inner NSGA-II runs on the predictors for `inner_evaluations`, starting from the measured
    front (the measured archs in survival order) and the previous round's predicted front, so each
    round refines the last instead of starting over. The first round is a random sample.

    State: the measured archs and values, the previous round's predicted front, the RNG and each
    round's predictor quality; the predictors are refit from the measurements on resume
    (deterministically), so nothing is pickled.
    """

    name = "linas"

    def __init__(self, problem, population: int, seed: int, operators: str = DEFAULT_OPERATORS,
                 inner_evaluations: int = DEFAULT_INNER_EVALUATIONS):
        self.problem, self.population, self.operators = problem, population, operators
        self.inner_evaluations, self.inner_population = inner_evaluations, inner_population(population)
        self.rng = np.random.default_rng(seed)
        self.evaluator = Evaluator()
        self.columns = problem.measured_columns()
        self.X, self.values, self.quality, self.carry = [], {c: [] for c in self.columns}, [], []
        self.pending = None  # what the predictors said of the archs last asked: (models, predictions)

    def _archs(self, X) -> list:
        return [self.problem.subspace.decode(x) for x in X]

    def _fit(self) -> dict:
        archs = self._archs(self.X)
        features = arch_features(self.problem.subspace, archs, [self.problem.exact(a) for a in archs])
        return {c: Predictor(features, self.values[c]) for c in self.columns}

    def _inner_start(self) -> np.ndarray:
        """The inner NSGA-II's first population: the measured archs in survival order (the measured front
        first) up to half of it, the previous round's predicted front, then random archs."""
        measured = {a.key(): {c: self.values[c][i] for c in self.columns} for i, a in enumerate(self._archs(self.X))}
        start = [tuple(x) for x in ranked(MeasuredProblem(self.problem, measured), self.X)[: self.inner_population // 2]]
        start += [tuple(x) for x in self.carry if tuple(x) not in set(start)][: self.inner_population - len(start)]
        start += random_unseen(self.problem, self.rng, self.inner_population - len(start), exclude=start)
        return np.array(start, dtype=float)

    def _propose(self) -> list:
        """The next round: the predicted front's best-ranked unmeasured archs (the whole sub-space ranked where
        it is small, else the inner search's final population), topped up with random unmeasured archs."""
        problem, seen = self.problem, {tuple(x) for x in self.X}
        predictors = self._fit()
        surrogate = PredictedProblem(problem, predictors)
        if problem.subspace.candidate_count() <= self.inner_evaluations:
            candidates = [problem.subspace.encode(a) for a in problem.subspace.candidates()]
        else:
            inner = NSGA2(pop_size=self.inner_population, sampling=self._inner_start(), **_variation(self.operators),
                          eliminate_duplicates=DefaultDuplicateElimination(func=lambda pop: canonical_genomes(problem, pop.get("X"))))
            result = minimize(surrogate, inner, ("n_eval", self.inner_evaluations), seed=int(self.rng.integers(2**31 - 1)),
                              verbose=False)
            candidates = canonical_genomes(problem, result.algorithm.pop.get("X"))
        order = [[float(v) for v in x] for x in ranked(surrogate, candidates)]
        unmeasured = [x for x in order if tuple(x) not in seen]
        want = min(self.population, problem.subspace.candidate_count() - len(self.X))
        chosen = unmeasured[:want]
        self.carry = unmeasured[want:][: self.inner_population]  # the predicted front not measured yet: next round's start
        chosen += [list(x) for x in random_unseen(problem, self.rng, want - len(chosen), seen | {tuple(x) for x in chosen})]
        if chosen:
            archs = self._archs(chosen)
            self.pending = ({c: predictors[c].label for c in self.columns},
                            {c: [r[c] for r in surrogate.rows(archs)] for c in self.columns})
        return chosen

    def ask(self):
        if len(self.X) >= self.problem.subspace.candidate_count():
            return None
        if self.X:
            X = self._propose()
        else:
            X = canonical_genomes(self.problem, DistinctArchSampling()._do(self.problem, self.population, random_state=self.rng))
            self.pending = None
        return Population.new(X=np.array(X, dtype=float)) if len(X) else None

    def evaluate(self, pop):
        self.evaluator.eval(self.problem, pop)

    def tell(self, pop):
        X = canonical_genomes(self.problem, pop.get("X"))
        records = self.problem.records(self._archs(X), count_hits=False)  # just evaluated: cache reads
        measured = {c: [float(r[c]) for r in records] for c in self.columns}
        report = {"round": len(self.quality) + 1, "evaluations": len(self.X) + len(X), "predictors": None}
        if self.pending is not None:
            models, predicted = self.pending
            report["predictors"] = {c: {"model": models[c], **prediction_quality(predicted[c], measured[c])}
                                    for c in self.columns}
        self.quality.append(report)
        self.X += [[float(v) for v in x] for x in X]
        for c in self.columns:
            self.values[c] += measured[c]

    def predictions(self) -> list | None:
        """None in the random first round, and where every objective is counted exactly."""
        if self.pending is None or not self.columns:
            return None
        predicted = self.pending[1]
        return [{c: predicted[c][i] for c in self.columns} for i in range(len(predicted[self.columns[0]]))]

    def report(self) -> dict:
        """Each round's predictor quality: Kendall tau and MAPE of its predictions against its measurements."""
        return {"predictor": self.quality}

    def state(self) -> dict:
        return {"X": self.X, "values": self.values, "quality": self.quality, "carry": self.carry,
                "random_state": self.rng.bit_generator.state}

    def restore(self, state: dict):
        self.X, self.values, self.quality = state["X"], state["values"], state["quality"]
        self.carry = state.get("carry", [])
        self.rng.bit_generator.state = state["random_state"]


def make_search(name: str, problem, population: int, seed: int, operators: str = DEFAULT_OPERATORS,
                inner_evaluations: int = DEFAULT_INNER_EVALUATIONS):
    if name == "linas":
        return LinasSearch(problem, population, seed, operators, inner_evaluations)
    searches = {"nsga2": NSGA2Search, "random": RandomSearch, "exhaustive": ExhaustiveSearch}
    return searches[name](problem, population, seed, operators)
