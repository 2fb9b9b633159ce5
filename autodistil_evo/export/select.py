"""Choose students from a search's Pareto set: filter with bounds, pick the knee or an extreme.

Knee: with the front's two objectives min-max normalised to [0, 1], the point farthest from the
straight line joining the front's two extreme points (the largest "bulge" towards the ideal
point). With fewer than three points there is no bulge; the point with the smaller sum of
normalised objectives is taken.
"""

from pathlib import Path

import numpy as np

from autodistil_evo.bounds import parse_bound
from autodistil_evo.errors import UserError
from autodistil_evo.fileio import read_json
from autodistil_evo.search.problem import COLUMN

WHERE_NAMES = ("loss", "flops", "params", "latency_ms", "layers", "heads", "hidden", "ffn")
PICKS = ("knee", "min-loss", "min-flops", "all")
JSON_KEYS = ("id", "subspace", "layers", "heads", "hidden", "mlp_ratio", "params", "flops", "loss", "picked")


def row_value(row: dict, name: str) -> float:
    """A row's value for a bound; per-layer `heads` / `ffn` (lists) are bounded by their largest layer."""
    value = row[name]
    return float(max(value) if isinstance(value, list) else value)


def load_front(search_dir) -> dict:
    path = Path(search_dir) / "pareto.json"
    if not path.is_file():
        raise UserError(f"{search_dir}: no pareto.json; run `autodistil-evo evolve ... --out {search_dir}` first")
    data = read_json(path, "Pareto set")
    if not isinstance(data, dict) or not isinstance(data.get("front"), list):
        raise UserError(f"{path}: not a Pareto set written by autodistil-evo (no 'front' list)")
    return data


def knee_index(points: np.ndarray) -> int:
    """Index of the knee of a 2-objective front (see module docstring)."""
    span = points.max(axis=0) - points.min(axis=0)
    normalised = (points - points.min(axis=0)) / np.where(span > 0, span, 1.0)
    if len(points) < 3:
        return int(np.argmin(normalised.sum(axis=1)))
    a = normalised[np.argmin(normalised[:, 1])]  # best in the second objective (e.g. FLOPs)
    b = normalised[np.argmin(normalised[:, 0])]  # best in the first (proxy loss)
    direction = b - a
    length = np.linalg.norm(direction)
    if length == 0:
        return int(np.argmin(normalised.sum(axis=1)))
    # distance of each point to the line through a and b (2-D cross product)
    distance = np.abs(direction[0] * (normalised[:, 1] - a[1]) - direction[1] * (normalised[:, 0] - a[0])) / length
    return int(np.argmax(distance))


def select(search_dir, where: list, pick: str = "knee") -> dict:
    if pick not in PICKS:
        raise UserError(f"--pick: unknown '{pick}' (known: {', '.join(PICKS)})")
    data = load_front(search_dir)
    bounds = [parse_bound(w, WHERE_NAMES, "--where") for w in where]
    front = data["front"]
    for b in bounds:
        if b.name == "latency_ms" and any(r.get("latency_ms") is None for r in front):
            raise UserError("--where latency_ms: this search did not measure latency (evolve with --objectives including latency)")
    chosen = [r for r in front if all(b.holds(row_value(r, b.name)) for b in bounds)]
    if not chosen:
        closest = min(front, key=lambda r: max(b.violation(row_value(r, b.name)) for b in bounds))
        broken = [b for b in bounds if not b.holds(row_value(closest, b.name))]
        details = ", ".join(f"{b.name} = {row_value(closest, b.name):.4g}" for b in broken)
        raise UserError(
            f"no Pareto point satisfies {' and '.join(map(str, bounds))}; the closest is {closest['id']} "
            f"({details}), which breaks {', '.join(map(str, broken))}"
        )
    objectives = data.get("objectives", ["loss", "flops"])
    if pick == "all":
        picked = {r["id"] for r in chosen}
    elif pick == "min-loss":
        picked = {min(chosen, key=lambda r: r["loss"])["id"]}
    elif pick == "min-flops":
        picked = {min(chosen, key=lambda r: r["flops"])["id"]}
    else:
        pair = objectives[:2] if len(objectives) >= 2 else [objectives[0], "flops"]
        points = np.array([[float(r[COLUMN[o]]) for o in pair] for r in chosen])
        picked = {chosen[knee_index(points)]["id"]}
    rows = [{**r, "picked": r["id"] in picked} for r in chosen]
    return {"rows": rows, "picked": picked, "teacher": data.get("teacher", {}), "objectives": objectives}
