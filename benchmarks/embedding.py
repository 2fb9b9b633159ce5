"""Embedding students: fidelity to the teacher's sentence embeddings against FLOPs, no labels needed.

Rows (all measured by `embed-eval`'s code on the same fixed sentences: held-out corpus text and the
embedded task's test texts):
- `searched`: students spread over the bench K=3 search's front, taken from their SuperLMs;
- `searched-embedding-term`: the same archs from K=3 SuperLMs trained with the bench recipe plus
  `embedding_weight` (the sentence-embedding term), same steps; left out with `--embedding-weight 0`
  (`make bench`, for its time: the second run is `make bench-studies`'s);
- `layer-drop`: the teacher keeping k of its layers, untrained: the bottom k, and k spread evenly
  (layers floor(i * L / k): every other one at half depth, as sentence-transformers' layer-reduction
  recipe keeps them) (k = 1..L-1);
- `pca`: the teacher's own embeddings cut to each searched student's width with PCA (fitted on other
  corpus text), at the teacher's FLOPs.
Goal: at equal FLOPs, the searched students' fidelity above the layer-dropped teacher's over the whole
front (compared with the better layer-drop variant, interpolated in FLOPs).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from common import BENCH_RECIPE, BENCH_RUN, TEACHER, WORK, ensure_bench_search, ensure_run, export_arch, write_recipe
from report import command, machine, markdown_table, save_figure, write_results, write_section

from autodistil_evo.spaces import Arch, count_flops
from autodistil_evo.spaces.space import GENES
from autodistil_evo.supernet import stride_layers


def front_picks(search_dir: Path, n: int) -> list:
    """`n` students evenly over the front's FLOPs range."""
    front = sorted(json.loads((search_dir / "pareto.json").read_text())["front"], key=lambda r: r["flops"])
    index = np.unique(np.linspace(0, len(front) - 1, min(n, len(front))).round().astype(int))
    return [{"id": front[i]["id"], "subspace": front[i]["subspace"], "arch": {g: front[i][g] for g in GENES},
             "flops": front[i]["flops"]} for i in index]


def layer_drop(layers: list, name: str) -> Path:
    """The teacher keeping `layers` (indices), untrained, saved as a sentence-transformers folder."""
    import torch

    from autodistil_evo.export.export import sentence_transformer_files
    from autodistil_evo.teacher import load_teacher

    out = WORK / "layer-drop" / name
    if (out / "config.json").is_file():
        return out
    teacher = load_teacher(TEACHER)
    model = teacher.model
    model.encoder.layer = torch.nn.ModuleList(model.encoder.layer[i] for i in layers)
    model.config.num_hidden_layers = len(layers)
    model.save_pretrained(out)
    teacher.tokenizer.save_pretrained(out)
    sentence_transformer_files(teacher.source, out, model.config.hidden_size)
    return out


def pca_rows(widths: list, sentences: int, teacher_flops: int) -> list:
    """Fidelity of the teacher's embeddings projected to each width by PCA fitted on other corpus text."""
    from sklearn.decomposition import PCA

    from autodistil_evo.data import corpus_parts, hash_bucket
    from autodistil_evo.search.fidelity import embed, encoder_forward, fidelity, fidelity_sentences
    from autodistil_evo.teacher import load_teacher, pooling_of

    teacher = load_teacher(TEACHER)
    texts = fidelity_sentences(sentences)
    rng = np.random.default_rng(1)
    train_texts = [t for _, part in corpus_parts(None) for t in part["text"] if hash_bucket(t) >= 0.05 and len(t.split()) >= 5]
    fit_texts = [train_texts[i] for i in sorted(rng.choice(len(train_texts), size=min(2000, len(train_texts)), replace=False))]
    pooling = pooling_of(teacher.source)
    forward = encoder_forward(teacher.model)
    full, fit = embed(forward, teacher.tokenizer, texts, pooling), embed(forward, teacher.tokenizer, fit_texts, pooling)
    rows = []
    for width in sorted(set(widths)):
        projected = PCA(n_components=width, random_state=0).fit(fit.numpy()).transform(full.numpy())
        import torch

        rows.append({"id": f"teacher-pca-{width}", "kind": "pca", "width": width, "flops": teacher_flops,
                     **fidelity(torch.from_numpy(projected).float(), full)})
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=6, help="front students, evenly over its FLOPs range")
    parser.add_argument("--embedding-weight", type=float, default=10.0, help="the term's weight in the second run (0: no second run)")
    parser.add_argument("--sentences", type=int, default=1000)
    args = parser.parse_args()
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one bar a model load, dozens of loads
    from autodistil_evo.export.embed_eval import embed_eval
    from autodistil_evo.teacher import load_teacher

    run, search = ensure_bench_search()
    term_run = None
    if args.embedding_weight:
        term_recipe = write_recipe(BENCH_RECIPE, WORK / "recipes" / f"bench-embedding{args.embedding_weight:g}.yaml",
                                   embedding_weight=args.embedding_weight)
        term_run = ensure_run(WORK / f"bench-embedding{args.embedding_weight:g}-run", term_recipe)
    picks = front_picks(search, args.students)
    teacher = load_teacher(TEACHER)
    shape = teacher.shape
    teacher_flops = count_flops(shape.arch(), shape.dims(), 128)
    depth_flops = lambda k: count_flops(Arch(k, shape.heads, shape.hidden, shape.ffn / shape.hidden), shape.dims(), 128)  # noqa: E731
    models = []  # (folder, id, kind, flops)
    for p in picks:
        models.append((export_arch(run, p["subspace"], p["arch"]), p["id"], "searched", p["flops"]))
        if term_run:
            models.append((export_arch(term_run, p["subspace"], p["arch"]), p["id"], "searched-embedding-term", p["flops"]))
    for k in range(1, shape.layers):
        models.append((layer_drop(list(range(k)), f"bottom-{k}"), f"teacher-bottom-{k}", "layer-drop", depth_flops(k)))
        every = stride_layers(k, shape.layers)  # layers floor(i * L / k): every other one where k = L / 2
        models.append((layer_drop(every, "every-" + "-".join(map(str, every))), "teacher-layers-" + "-".join(map(str, every)),
                       "layer-drop", depth_flops(k)))
    scored = embed_eval([str(m[0]) for m in models], TEACHER, args.sentences)
    rows = [{"id": ident, "kind": kind, "flops": flops, "width": s["width"], "spearman": s["spearman"],
             "recall_at_10": s["recall_at_10"]} for (_, ident, kind, flops), s in zip(models, scored)]
    rows += pca_rows([r["width"] for r in rows if r["kind"] == "searched"], args.sentences, teacher_flops)

    drop = sorted((r for r in rows if r["kind"] == "layer-drop"), key=lambda r: r["flops"])
    best_drop = {}
    for r in drop:
        best_drop[r["flops"]] = max(best_drop.get(r["flops"], -1.0), r["spearman"])
    xs, ys = zip(*sorted(best_drop.items()))
    verdicts = []
    for r in (r for r in rows if r["kind"] == "searched"):
        baseline = float(np.interp(r["flops"], xs, ys))
        verdicts.append({"id": r["id"], "flops": r["flops"], "spearman": r["spearman"], "layer_drop_at_flops": baseline,
                         "above": r["spearman"] > baseline})
    met = all(v["above"] for v in verdicts)
    write_results("embedding", {"sentences": args.sentences, "embedding_weight": args.embedding_weight, "rows": rows,
                                "versus_layer_drop": verdicts, "goal_met": met, "teacher_flops": teacher_flops})

    from autodistil_evo.plots import new_figure

    fig, ax = new_figure(figsize=(7, 4.5))
    for kind, marker in (("searched", "o"), ("searched-embedding-term", "s"), ("layer-drop", "^"), ("pca", "x")):
        mine = [r for r in rows if r["kind"] == kind]
        ax.scatter([r["flops"] / 1e9 for r in mine], [r["spearman"] for r in mine], marker=marker, label=kind)
    ax.set_xlabel("GFLOPs per sequence of 128 tokens")
    ax.set_ylabel("fidelity: Spearman of cosine similarities")
    ax.set_title("embedding fidelity to all-MiniLM-L6-v2")
    ax.legend()
    save_figure(fig, "embedding")

    table = markdown_table(["student", "kind", "GFLOPs", "width", "Spearman", "recall@10"],
                           [(r["id"], r["kind"], f"{r['flops'] / 1e9:.3f}", r["width"], f"{r['spearman']:.4f}",
                             f"{r['recall_at_10']:.3f}") for r in sorted(rows, key=lambda r: (r["kind"], r["flops"]))])
    above = sum(v["above"] for v in verdicts)
    write_section("embedding", (
        f"## Embedding fidelity of the bench front\n\nGoal {'met' if met else 'not met'}: {above} of {len(verdicts)} searched students have "
        f"higher fidelity than the layer-dropped teacher at their FLOPs (the better of bottom and evenly spread layers, "
        f"interpolated; below the 1-layer teacher's FLOPs, against the 1-layer teacher).\n\nMachine: {machine()}. Command: `{command()}`. Fidelity on {args.sentences} fixed sentences "
        f"(held-out corpus text and the embedded task's test texts): Spearman of the two models' cosine similarities "
        f"over seeded pairs, and recall@10 of the teacher's nearest neighbours. Searched students from the bench K=3 "
        f"run ({BENCH_RUN.name})" + (f" and from the same recipe with `embedding_weight` {args.embedding_weight:g}" if term_run else "") +
        "; PCA rows are "
        f"the teacher's embeddings cut to a student's width.\n\n{table}\n\n![fidelity vs FLOPs](benchmarks/embedding.png)\n"))


if __name__ == "__main__":
    main()
