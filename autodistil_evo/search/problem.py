"""The pymoo Problem of one sub-space: integer genome = indices into the sub-space's choices.

The genome layout, decoding and encoding belong to `SubSpace`. Every genome is a valid arch;
genes past a genome's depth are inactive, so several genomes can be one arch. Objectives (minimised) are any of proxy `loss`, `flops`, `params`,
measured `latency` (ms) and embedding `fidelity` (as 1 - its Spearman, `fidelity_loss`); bounds go to pymoo as
inequality constraints G <= 0.
"""

import numpy as np
from pymoo.core.problem import Problem

from autodistil_evo.spaces import ModelDims, SubSpace, count_flops, count_params

OBJECTIVES = ("loss", "flops", "params", "latency", "fidelity")
BOUND_NAMES = ("loss", "flops", "params", "latency_ms")
COLUMN = {"loss": "loss", "flops": "flops", "params": "params", "latency": "latency_ms", "fidelity": "fidelity_loss"}
EXACT = ("flops", "params")  # counted from the arch; the other quantities are measured


class SubspaceProblem(Problem):
    def __init__(self, subspace: SubSpace, dims: ModelDims, seq_len: int, evaluator, objectives, bounds):
        self.subspace, self.dims, self.seq_len = subspace, dims, seq_len
        self.evaluator, self.objectives, self.constraint_bounds = evaluator, list(objectives), list(bounds)
        super().__init__(
            n_var=len(subspace.genome_sizes()),
            n_obj=len(self.objectives),
            n_ieq_constr=len(self.constraint_bounds),
            xl=0,
            xu=np.array(subspace.genome_sizes()) - 1,
            vtype=int,
        )

    def records(self, archs: list, count_hits: bool = True) -> list:
        """Every value of each arch: proxy loss (latency and fidelity, when measured), params, FLOPs."""
        measured = self.evaluator.evaluate_many(archs, count_hits)
        return [{**m, **self.exact(a)} for a, m in zip(archs, measured)]

    def measured_columns(self) -> list:
        """The quantities of the objectives and bounds that are measured (not counted exactly), in order."""
        names = [COLUMN[o] for o in self.objectives] + [b.name for b in self.constraint_bounds]
        return list(dict.fromkeys(n for n in names if n not in EXACT))

    def exact(self, arch) -> dict:
        return {"params": count_params(arch, self.dims), "flops": count_flops(arch, self.dims, self.seq_len)}

    def fill(self, rows, out):
        """pymoo's F (and G) from each arch's values."""
        out["F"] = np.array([[float(r[COLUMN[o]]) for o in self.objectives] for r in rows])
        if self.constraint_bounds:
            out["G"] = np.array([[b.violation(float(r[b.name])) for b in self.constraint_bounds] for r in rows])

    def _evaluate(self, X, out, *args, **kwargs):
        self.fill(self.records([self.subspace.decode(x) for x in X]), out)
