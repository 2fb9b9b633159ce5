"""Hidden-channel order at step 0: which cut of the teacher keeps more of it, untrained.

The teacher (all layers and heads; the FFN at the teacher's ratio to the width, as the genome has it) cut to a
narrower hidden width by first-k slicing, in
the teacher's own channel order (`first-k`) and with its hidden channels sorted by LayerNorm-activation
importance first (`importance`, `order_hidden: true`: Minitron's embedding-channel ranking, measured on
the 64 training blocks the trainer uses). Each cut is the SuperLM subnet at step 0, extracted as a
model; it is scored as an embedder: STS Benchmark Spearman x 100 (dev, where a choice would be made,
and test, what is reported) and fidelity to the teacher's embeddings (`embed-eval`'s sentences).
A rotation of the residual stream (SliceGPT) is not measured: with BERT's LayerNorm it does not keep
the teacher's function (autodistil_evo/distill/rewire.py).
"""

import argparse

from report import command, machine, markdown_table, write_results, write_section

from autodistil_evo.data import build_corpus, proxy_sample, sts_benchmark
from autodistil_evo.distill.recipe import load_recipe
from autodistil_evo.distill.rewire import importance, rewired_state
from autodistil_evo.distill.trainer import REWIRE_BLOCKS
from autodistil_evo.search.fidelity import embed, encoder_forward, fidelity, fidelity_sentences, sts_spearman
from autodistil_evo.spaces import Arch, SubSpace
from autodistil_evo.supernet import SuperLM
from autodistil_evo.teacher import load_teacher, pooling_of

ORDERS = ("first-k", "importance")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--widths", default="128,192,256,320", help="Hidden widths cut to (the teacher's is kept too).")
    parser.add_argument("--sentences", type=int, default=1000, help="Fidelity sentences.")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    teacher = load_teacher(recipe.teacher_name)
    shape = teacher.shape
    widths = [int(w) for w in args.widths.split(",")] + [shape.hidden]
    packed = build_corpus(recipe.corpus, teacher.tokenizer, recipe.seq_len, recipe.heldout_fraction)
    scores = importance(teacher, proxy_sample(packed.train, REWIRE_BLOCKS, recipe.seed).long())
    states = {"first-k": teacher.state_dict(), "importance": rewired_state(teacher, scores, heads_and_ffn=False, hidden=True)}
    splits = {split: sts_benchmark(split) for split in ("dev", "test")}
    texts, pooling = fidelity_sentences(args.sentences), pooling_of(teacher.source)
    reference = embed(encoder_forward(teacher.model), teacher.tokenizer, texts, pooling)
    subspace = SubSpace("cut", [shape.layers], [shape.heads], widths, [shape.ffn / shape.hidden])
    dims = shape.dims()

    rows = []
    for order in ORDERS:
        superlm = SuperLM(subspace, dims, layer_norm_eps=teacher.layer_norm_eps, dropout=0.0,
                          pad_token_id=teacher.model.config.pad_token_id or 0)
        superlm.init_from_teacher(states[order], shape.layers)
        for width in widths:
            model = superlm.extract(Arch(shape.layers, shape.heads, width, shape.ffn / shape.hidden)).eval()
            forward = encoder_forward(model)
            row = {"order": order, "hidden": width,
                   **{f"stsb_{split}": sts_spearman(forward, teacher.tokenizer, pairs, pooling) for split, pairs in splits.items()},
                   "fidelity": fidelity(embed(forward, teacher.tokenizer, texts, pooling), reference)["spearman"]}
            rows.append(row)
            print(row, flush=True)

    def of(order, width, key):
        return next(r[key] for r in rows if r["order"] == order and r["hidden"] == width)

    cut = widths[:-1]
    better_dev = sum(of("importance", w, "stsb_dev") > of("first-k", w, "stsb_dev") for w in cut)
    chosen = "importance" if better_dev * 2 > len(cut) else "first-k"
    write_results("channel_order", {"recipe": args.recipe, "teacher": shape.name, "widths": widths,
                                    "importance_blocks": REWIRE_BLOCKS, "sts_pairs": {s: len(p) for s, p in splits.items()},
                                    "fidelity_sentences": len(texts), "rows": rows, "chosen_on_dev": chosen})
    table = markdown_table(
        ["hidden", *(f"{o}: STS-B dev / test" for o in ORDERS), *(f"{o}: fidelity" for o in ORDERS)],
        [(w, *(f"{of(o, w, 'stsb_dev'):.2f} / {of(o, w, 'stsb_test'):.2f}" for o in ORDERS),
          *(f"{of(o, w, 'fidelity'):.3f}" for o in ORDERS)) for w in widths])
    write_section(
        "channel_order",
        f"## Hidden-channel order at step 0\n\nMachine: {machine()}. The teacher ({shape.name}: {shape.layers} layers, "
        f"{shape.heads} heads) cut to each hidden width (the FFN at {shape.ffn // shape.hidden}x it, as the genome has it) by "
        f"first-k slicing, untrained: in its own "
        f"channel order, and with its hidden channels sorted by LayerNorm-activation importance on {REWIRE_BLOCKS} "
        f"training blocks (`order_hidden: true`). STS Benchmark Spearman x 100 of mean-pooled, normalised embeddings "
        f"(dev {len(splits['dev'])} pairs, test {len(splits['test'])}); fidelity: Spearman of cosine similarities "
        f"against the teacher's on {len(texts)} sentences.\n\nCommand: `{command()}`\n\n{table}\n\n"
        f"Importance order is ahead on STS-B dev at {better_dev} of {len(cut)} cut widths, so the choice on dev is "
        f"**{chosen}**; at the teacher's width both orders are the teacher.\n",
    )


if __name__ == "__main__":
    main()
