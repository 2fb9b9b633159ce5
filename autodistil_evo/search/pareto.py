"""Non-dominated sets, hypervolume and the files a search leaves: pareto.json / .csv / .png."""

import csv
import io

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from autodistil_evo.fileio import write_json, write_text
from autodistil_evo.plots import new_figure, save_png
from autodistil_evo.search.problem import COLUMN
from autodistil_evo.spaces import Arch

CSV_COLUMNS = ["id", "subspace", "layers", "layer_ids", "heads", "hidden", "mlp_ratio", "ffn", "params", "flops", "loss",
               "latency_ms", "fidelity"]


def objective_matrix(rows: list, objectives: list) -> np.ndarray:
    return np.array([[float(r[COLUMN[o]]) for o in objectives] for r in rows], dtype=float).reshape(len(rows), len(objectives))


def non_dominated(rows: list, objectives: list) -> list:
    """The feasible rows no other feasible row dominates, sorted by the second objective, then the first."""
    feasible = [r for r in rows if r.get("feasible", True)]
    if not feasible:
        return []
    front = NonDominatedSorting().do(objective_matrix(feasible, objectives), only_non_dominated_front=True)
    chosen = [feasible[i] for i in front]
    return sorted(chosen, key=lambda r: tuple(float(r[COLUMN[o]]) for o in reversed(objectives)))


def hypervolume(rows: list, objectives: list, reference: list) -> float:
    """HV of the feasible rows with objectives divided by the reference point (so the box is 1 x 1 ...)."""
    feasible = [r for r in rows if r.get("feasible", True)]
    if not feasible:
        return 0.0
    F = objective_matrix(feasible, objectives) / np.array(reference, dtype=float)
    F = F[(F < 1.0).all(axis=1)]
    return float(HV(ref_point=np.ones(len(objectives)))(F)) if len(F) else 0.0


def front_row(row: dict) -> dict:
    arch = Arch.from_dict(row["arch"])
    return {
        "id": f"{row['subspace']}-{row['key']}",
        "subspace": row["subspace"],
        **arch.to_dict(),  # layers, heads, hidden, mlp_ratio: lists where per layer; layer_ids where chosen
        "ffn": arch.ffn,
        "params": row["params"],
        "flops": row["flops"],
        "loss": row["loss"],
        "latency_ms": row.get("latency_ms"),
        "fidelity": row.get("fidelity"),
        "fidelity_loss": row.get("fidelity_loss"),
    }


def write_front(search_dir, front: list, meta: dict):
    write_json(search_dir / "pareto.json", {**meta, "front": front})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in front:
        writer.writerow({k: row.get(k) for k in CSV_COLUMNS})
    write_text(search_dir / "pareto.csv", buffer.getvalue())


def plot_front(rows: list, front: list, objectives: list, path, title: str):
    x_name, y_name = (objectives[1], objectives[0]) if len(objectives) > 1 else ("flops", objectives[0])
    fig, ax = new_figure(figsize=(7.5, 4.8))
    for subspace in dict.fromkeys(r["subspace"] for r in rows):
        mine = [r for r in rows if r["subspace"] == subspace]
        ax.scatter([r[COLUMN[x_name]] for r in mine], [r[COLUMN[y_name]] for r in mine], s=14, alpha=0.55, label=subspace)
    if front:
        xs = [r[COLUMN[x_name]] for r in front]
        ys = [r[COLUMN[y_name]] for r in front]
        order = np.argsort(xs)
        ax.plot(np.array(xs)[order], np.array(ys)[order], "k-", drawstyle="steps-post", linewidth=1.5)
        ax.scatter(xs, ys, facecolors="none", edgecolors="black", s=60, label="global Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(x_name + (" (ms)" if x_name == "latency" else ""))
    ax.set_ylabel("proxy loss (relation KL)" if y_name == "loss" else y_name)
    ax.set_title(title)
    ax.legend()
    save_png(fig, path)
