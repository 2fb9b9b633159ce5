"""Search algorithms behind one ask / evaluate / tell interface, each with a JSON-able state.

NSGA-II is pymoo's, driven by ask/tell. Its state (population, objective and constraint values,
rank and crowding, RNG) is restored without pickle, in population order, so a resumed search
draws exactly the offspring an uninterrupted one would. `random` and `exhaustive` are the
baselines on the same problem and budget.
"""

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling

ALGORITHMS = ("nsga2", "random", "exhaustive")


def _array_state(a: np.ndarray) -> dict:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.reshape(-1).tolist()}


def _array(state: dict) -> np.ndarray:
    return np.array(state["values"], dtype=state["dtype"]).reshape(state["shape"])


class NSGA2Search:
    name = "nsga2"

    def __init__(self, problem, population: int, seed: int):
        self.problem = problem
        self.algorithm = NSGA2(
            pop_size=population,
            sampling=IntegerRandomSampling(),
            crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
            mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
            eliminate_duplicates=True,
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


class _EnumeratingSearch:
    """Shared by the baselines: propose genomes not seen before, `population` at a time."""

    def __init__(self, problem, population: int, seed: int):
        self.problem = problem
        self.population = population
        self.evaluator = Evaluator()
        self.seen = set()
        self.sizes = [int(u) + 1 for u in problem.xu]

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

    def __init__(self, problem, population: int, seed: int):
        super().__init__(problem, population, seed)
        self.rng = np.random.default_rng(seed)

    def _propose(self):
        total = int(np.prod(self.sizes))
        want = min(self.population, total - len(self.seen))
        out, chosen = [], set()
        while len(out) < want:  # terminates: `want` unseen genomes exist
            x = tuple(int(self.rng.integers(n)) for n in self.sizes)
            if x not in self.seen and x not in chosen:
                chosen.add(x)
                out.append(list(x))
        return out

    def state(self) -> dict:
        return {**super().state(), "random_state": self.rng.bit_generator.state}

    def restore(self, state: dict):
        super().restore(state)
        self.rng.bit_generator.state = state["random_state"]


class ExhaustiveSearch(_EnumeratingSearch):
    name = "exhaustive"

    def _propose(self):
        out = []
        for index in np.ndindex(*self.sizes):
            if len(out) == self.population:
                break
            if index not in self.seen:
                out.append(list(index))
        return out


def make_search(name: str, problem, population: int, seed: int):
    return {"nsga2": NSGA2Search, "random": RandomSearch, "exhaustive": ExhaustiveSearch}[name](problem, population, seed)
