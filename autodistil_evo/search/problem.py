"""The pymoo Problem of one sub-space: integer genome = indices into the sub-space's choices.

Every genome is a valid arch. Objectives (minimised) are any of proxy `loss`, `flops`, `params`,
measured `latency` (ms); bounds go to pymoo as inequality constraints G <= 0.
"""

import numpy as np
from pymoo.core.problem import Problem

from autodistil_evo.spaces import Arch, ModelDims, SubSpace, count_flops, count_params
from autodistil_evo.spaces.space import GENES

OBJECTIVES = ("loss", "flops", "params", "latency")
BOUND_NAMES = ("loss", "flops", "params", "latency_ms")
COLUMN = {"loss": "loss", "flops": "flops", "params": "params", "latency": "latency_ms"}


def decode(subspace: SubSpace, x) -> Arch:
    return Arch(*(subspace.choices(g)[int(round(v))] for g, v in zip(GENES, x)))


def encode(subspace: SubSpace, arch: Arch) -> list:
    return [subspace.choices(g).index(getattr(arch, g)) for g in GENES]


class SubspaceProblem(Problem):
    def __init__(self, subspace: SubSpace, dims: ModelDims, seq_len: int, evaluator, objectives, bounds):
        self.subspace, self.dims, self.seq_len = subspace, dims, seq_len
        self.evaluator, self.objectives, self.constraint_bounds = evaluator, list(objectives), list(bounds)
        super().__init__(
            n_var=len(GENES),
            n_obj=len(self.objectives),
            n_ieq_constr=len(self.constraint_bounds),
            xl=0,
            xu=np.array([len(subspace.choices(g)) - 1 for g in GENES]),
            vtype=int,
        )

    def records(self, archs: list, count_hits: bool = True) -> list:
        """Every value of each arch: proxy loss (and latency, when measured), params, FLOPs."""
        measured = self.evaluator.evaluate_many(archs, count_hits)
        return [
            {**m, "params": count_params(a, self.dims), "flops": count_flops(a, self.dims, self.seq_len)}
            for a, m in zip(archs, measured)
        ]

    def _evaluate(self, X, out, *args, **kwargs):
        rows = self.records([decode(self.subspace, x) for x in X])
        out["F"] = np.array([[float(r[COLUMN[o]]) for o in self.objectives] for r in rows])
        if self.constraint_bounds:
            out["G"] = np.array([[b.violation(float(r[b.name])) for b in self.constraint_bounds] for r in rows])
