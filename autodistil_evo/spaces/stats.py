"""Per-sub-space summary: how many candidates and the range of their params and FLOPs (analytic)."""

from autodistil_evo.spaces.cost import count_flops, count_params
from autodistil_evo.spaces.space import SearchSpace, TeacherShape


def subspace_stats(space: SearchSpace, teacher: TeacherShape = None, seq_len: int = None) -> list:
    dims = space.dims(teacher)
    seq_len = seq_len or space.seq_len
    rows = []
    for sub in space.subspaces.values():
        # cost grows with every gene: the extremes are the smallest and the largest arch
        small, large = sub.smallest(), sub.largest()
        rows.append(
            {
                "subspace": sub.name,
                "candidates": sub.candidate_count(),
                "params_min": count_params(small, dims),
                "params_max": count_params(large, dims),
                "flops_min": count_flops(small, dims, seq_len),
                "flops_max": count_flops(large, dims, seq_len),
            }
        )
    return rows
