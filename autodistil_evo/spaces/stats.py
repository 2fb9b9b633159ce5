"""Per-sub-space summary: how many candidates and the range of their params and FLOPs."""

from autodistil_evo.spaces.cost import count_flops, count_params
from autodistil_evo.spaces.space import SearchSpace, TeacherShape


def subspace_stats(space: SearchSpace, teacher: TeacherShape = None, seq_len: int = None) -> list:
    dims = space.dims(teacher)
    seq_len = seq_len or space.seq_len
    rows = []
    for sub in space.subspaces.values():
        candidates = sub.candidates()
        params = [count_params(a, dims) for a in candidates]
        flops = [count_flops(a, dims, seq_len) for a in candidates]
        rows.append(
            {
                "subspace": sub.name,
                "candidates": len(candidates),
                "params_min": min(params),
                "params_max": max(params),
                "flops_min": min(flops),
                "flops_max": max(flops),
            }
        )
    return rows
