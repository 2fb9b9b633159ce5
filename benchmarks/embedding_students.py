"""Embedding students: STS-B of students at 1/6, 1/3 and 1/2 of the teacher's FLOPs, the tool's path against a
cut of the teacher and against sentence-transformers' own distillation recipe, at equal training FLOPs.

Budgets: what keeping 1, 2 or 3 of all-MiniLM-L6-v2's 6 layers costs (FLOPs per 128-token sequence). Rows:
- `layer-drop`: the teacher keeping the k of its layers best on STS-B dev, untrained;
- `st-recipe`: sentence-transformers' recipe run with the library itself: the teacher keeping k evenly
  spread layers (floor(i * 6 / k), as its layer-reduction example does), full width, trained by
  `SentenceTransformerTrainer` with `losses.MSELoss` to reproduce the teacher's embeddings;
- `tool`: the teacher ordered (`rewire` + `order_hidden`) as the step-0 SuperLM of
  `spaces/minilm-l6-keep.yaml` (any 1-3 of the 6 layers, widths 192-384), searched once by LINAS on
  fidelity x FLOPs; the front's member within the budget best on STS-B dev is then trained by
  `train-student` on the embedding term alone (`embedding_weight` 1, `relation_weight` 0, `mse`);
- `searched-alone`: the same shape cut from the teacher in its own order (first-k, no ordering) and
  trained alike (`train-student --init teacher`);
- `tool+relations`: the tool's student trained with the relation KL kept beside the embedding term
  (`relation_weight` 1), at the same FLOPs (`--relations-seeds` seeds, 1 by default): whether relations stay;
- `tool-trained`: the tool's path with a trained SuperLM: the ordered teacher trained as a SuperLM of the same
  space on the embedding term (every sandwich member) for `--superlm-share` of the smallest budget's FLOPs,
  searched and picked alike, its student trained by `train-student` from its subnet. The SuperLM's whole
  training counts against each of its students: whether training the SuperLM beats searching it untrained.
The tool's SuperLM is the untrained ordered teacher, so the tool and searched-alone rows differ by the cut
alone. Every trained path reads the same text (one short text per training block of the embedded corpus,
in each seed's order) with batch 32, learning rate 1e-4 and 10% warm-up, and spends the training FLOPs the
st-recipe run measured (each batch counted as it ran, the teacher's label embeddings included); the other
paths' steps are set to match. 3 seeds; mean and standard error. Choices on dev, test reported.
Goal (#49): the tool beats st-recipe at 2 or more budgets by more than twice the standard error of the
difference and loses at none; STS-B 78 or more at 1/3 of the teacher's FLOPs or less.
"""

import argparse
import copy
import itertools
import json
import math
import statistics
import time
from pathlib import Path

import torch
from common import SMOKE, WORK, cli, write_recipe
from report import command, machine, markdown_table, write_results, write_section

from autodistil_evo.data import SentencePairs, block_sentences, build_corpus, sts_benchmark
from autodistil_evo.distill.trainer import step_flops, step_samples, teacher_tap_flops
from autodistil_evo.search.fidelity import embed, encoder_forward, fidelity, fidelity_sentences, sts_spearman
from autodistil_evo.spaces import Arch, count_flops
from autodistil_evo.spaces.space import GENES
from autodistil_evo.teacher import load_teacher, pooling_of

OUT = WORK / "embedding-students"
SPACE = "spaces/minilm-l6-keep.yaml"
BUDGET_LAYERS = (1, 2, 3)
BATCH, SENTENCE_LEN, LR, WARMUP = 32, 32, 1e-4, 0.1
PATHS = ("layer-drop", "st-recipe", "tool", "searched-alone", "tool+relations", "tool-trained")
DIAGNOSTIC = ("searched-alone", "tool+relations")  # why the tool's rows are what they are; not the goal's rows
ORDERED = {"rewire": True, "order_hidden": True}
# The trained paths after st-recipe: (path, recipe changes, train-student --init). `tool+relations` keeps the relation
# KL in the loss beside the embedding term (relation_weight 1), at the same FLOPs: whether relations stay.
TRAINED = (("tool", {**ORDERED, "relation_weight": 0.0}, "superlm"),
           ("searched-alone", {"relation_weight": 0.0}, "teacher"),
           ("tool+relations", {**ORDERED, "relation_weight": 1.0}, "superlm"),
           ("tool-trained", {**ORDERED, "relation_weight": 0.0}, "superlm"))
# The embedding term as the recipes of the trained paths (and the tool-trained SuperLM) run it.
EMBEDDING = {"embedding_weight": 1.0, "embedding_loss": "mse", "sentence_len": SENTENCE_LEN}


def sem(values: list) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def teacher_cut(teacher, layers: list):
    """The teacher keeping `layers` (indices), untrained."""
    model = copy.deepcopy(teacher.model)
    model.encoder.layer = torch.nn.ModuleList(model.encoder.layer[i] for i in layers)
    model.config.num_hidden_layers = len(layers)
    return model.eval()


@torch.no_grad()
def latency_ms(model, tokenizer, text: str, repeats: int = 30) -> float:
    """Median CPU latency of one forward at batch 1."""
    batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=SENTENCE_LEN)
    for _ in range(3):
        model(**batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


class Judge:
    """STS-B dev / test, fidelity and recall@10 against the teacher, and latency, of a model."""

    def __init__(self, teacher, pairs: int | None, sentences: int):
        self.tokenizer, self.pooling = teacher.tokenizer, pooling_of(teacher.source)
        self.splits = {}
        for split in ("dev", "test"):
            full = sts_benchmark(split)
            n = pairs or len(full)
            self.splits[split] = SentencePairs(full.first[:n], full.second[:n], full.gold[:n], full.source)
        self.texts = fidelity_sentences(sentences)
        self.reference = embed(encoder_forward(teacher.model), self.tokenizer, self.texts, self.pooling)

    def dev(self, forward) -> float:
        """STS-B dev of `forward(input_ids, attention_mask)` -> last hidden state."""
        return sts_spearman(forward, self.tokenizer, self.splits["dev"], self.pooling)

    def __call__(self, model, pooling=None) -> dict:
        pooling = pooling or self.pooling
        forward = encoder_forward(model)
        scores = fidelity(embed(forward, self.tokenizer, self.texts, pooling), self.reference)
        return {**{f"stsb_{s}": sts_spearman(forward, self.tokenizer, p, pooling) for s, p in self.splits.items()},
                "fidelity": scores["spearman"], "recall_at_10": scores["recall_at_10"],
                "latency_ms": latency_ms(model, self.tokenizer, self.splits["test"].first[0])}


def training_texts(packed, tokenizer, seed: int, steps: int) -> list:
    """The short texts the trainer reads in `steps` steps of seed `seed` (one per block, `block_sentences`)."""
    blocks = torch.cat([packed.train[step_samples(s, BATCH, len(packed.train), seed)] for s in range(steps)])
    ids, _ = block_sentences(blocks, tokenizer.cls_token_id, tokenizer.sep_token_id, 0, SENTENCE_LEN)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


class FlopMeter:
    """Counts the FLOPs of every forward of a BERT model as it runs (batch x padded length), x3 where trained. The
    hook sits on its embeddings: sentence-transformers calls the model's `forward` directly, past its hooks."""

    def __init__(self, model, arch: Arch, dims, passes: int):
        module = model.embeddings
        self.total = 0

        def count(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.total += passes * ids.shape[0] * count_flops(arch, dims, ids.shape[1])

        self.handle = module.register_forward_pre_hook(count, with_kwargs=True)

    def close(self):
        self.handle.remove()


def st_recipe(teacher_dir: str, teacher_shape, layers: list, seed: int, texts: list, steps: int, out: Path) -> int:
    """sentence-transformers' distillation: keep `layers`, train with MSELoss on the teacher's embeddings of
    `texts`. Returns the training FLOPs it measured (the teacher's label embeddings included)."""
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    torch.manual_seed(seed)
    teacher = SentenceTransformer(teacher_dir, device="cpu")
    student = SentenceTransformer(teacher_dir, device="cpu")
    bert = student[0].auto_model
    bert.encoder.layer = torch.nn.ModuleList(bert.encoder.layer[i] for i in layers)
    bert.config.num_hidden_layers = len(layers)
    teacher.max_seq_length = student.max_seq_length = SENTENCE_LEN
    full, dims = teacher_shape.arch(), teacher_shape.dims()
    labels_meter = FlopMeter(teacher[0].auto_model, full, dims, passes=1)
    labels = teacher.encode(texts, batch_size=64, convert_to_numpy=True)
    labels_meter.close()
    dataset = datasets.Dataset.from_dict({"sentence": texts, "label": labels.tolist()})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
        warmup_ratio=WARMUP, weight_decay=0.01, seed=seed, data_seed=seed, report_to="none", save_strategy="no",
        logging_steps=max(steps // 5, 1), use_cpu=True, disable_tqdm=True)
    meter = FlopMeter(bert, Arch(len(layers), full.heads, full.hidden, full.mlp_ratio), dims, passes=3)
    SentenceTransformerTrainer(model=student, args=args, train_dataset=dataset, loss=losses.MSELoss(student)).train()
    meter.close()
    student.save(str(out / "model"))
    return labels_meter.total + meter.total


def front_within(search: Path, budget: int, n: int) -> list:
    """Up to `n` front members within `budget` FLOPs, by fidelity, best first."""
    front = json.loads((search / "pareto.json").read_text())["front"]
    rows = sorted((r for r in front if r["flops"] <= budget), key=lambda r: -(r["fidelity"] or -1))[:n]
    return [{**{g: r[g] for g in GENES}, "layer_ids": r["layer_ids"], "id": r["id"], "flops": r["flops"]} for r in rows]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1 if SMOKE else 3)
    parser.add_argument("--st-steps", type=int, default=4 if SMOKE else 200,
                        help="Steps of the st-recipe run (batch 32); its FLOPs are every trained path's.")
    parser.add_argument("--pairs", type=int, default=100 if SMOKE else None, help="STS-B pairs per split (all).")
    parser.add_argument("--sentences", type=int, default=100 if SMOKE else 500, help="Fidelity sentences.")
    parser.add_argument("--population", type=int, default=4 if SMOKE else 16)
    parser.add_argument("--generations", type=int, default=1 if SMOKE else 8)
    parser.add_argument("--relations-seeds", type=int, default=1,
                        help="Seeds of the tool+relations row (the relation KL kept beside the embedding term).")
    parser.add_argument("--candidates", type=int, default=2 if SMOKE else 5,
                        help="Front members within each budget compared on STS-B dev for the tool's pick.")
    parser.add_argument("--diagnostics", action=argparse.BooleanOptionalAction, default=True,
                        help="Also the rows that explain the tool's (searched-alone, tool+relations); `make bench` "
                             "leaves them to `make bench-studies`, whose run adds them to its cached rows.")
    parser.add_argument("--superlm-share", type=float, default=0.5,
                        help="tool-trained: the SuperLM's training FLOPs, as a share of the smallest budget's.")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher(None)
    shape, dims, full = teacher.shape, teacher.shape.dims(), teacher.shape.arch()
    seq_len = 128
    budgets = [{"layers": k, "flops": count_flops(Arch(k, full.heads, full.hidden, full.mlp_ratio), dims, seq_len)}
               for k in BUDGET_LAYERS]
    judge = Judge(teacher, args.pairs, args.sentences)
    rows_file = OUT / "rows.json"
    results = json.loads(rows_file.read_text()) if rows_file.is_file() else {}

    def keep(key, fn):  # resumable: one measured result per key
        if key not in results:
            results[key] = fn()
            rows_file.write_text(json.dumps(results, indent=1))
        return results[key]

    # layer-drop: every subset of k layers on dev, the best reported on test
    for budget in budgets:
        k = budget["layers"]

        def best_cut(k=k):
            dev = {str(list(s)): judge.dev(encoder_forward(teacher_cut(teacher, list(s))))
                   for s in itertools.combinations(range(shape.layers), k)}
            layers = json.loads(max(dev, key=dev.get))
            return {"layers": layers, **judge(teacher_cut(teacher, layers)), "train_flops": 0, "dev_scan": dev}

        keep(f"layer-drop/{k}", best_cut)

    # the tool's SuperLM (the ordered teacher, untrained) and its search
    base = write_recipe("recipes/quickstart.yaml", OUT / "recipes" / "ordered.yaml", space=str(Path(SPACE).resolve()),
                        rewire=True, order_hidden=True, seq_len=64, micro_batch=BATCH, lr=LR)
    from autodistil_evo.distill.artifact import load_superlm

    def searched(run, search, recipe, steps):
        """The SuperLM of `recipe` trained `steps` steps into `run`, and its search on fidelity x FLOPs."""
        if not (run / "keep" / "superlm.json").is_file():
            cli("train", "--recipe", recipe, "--out", run, "--steps", steps, "--resume")
        if not (search / "pareto.json").is_file():
            cli("evolve", run, "--out", search, "--objectives", "fidelity,flops", "--population", args.population,
                "--generations", args.generations, "--eval-samples", 8, "--seed", 0, "--resume")
        return load_superlm(run / "keep")

    run, search = OUT / "run", OUT / "search"
    trained = searched(run, search, base, 0)
    superlms = {"tool": (run, search, trained)}

    def trained_superlm(st_flops: float):
        """tool-trained's SuperLM: the ordered teacher trained on the embedding term for `--superlm-share` of
        `st_flops` (its steps from the trainer's own plan), then searched."""
        from autodistil_evo.distill.recipe import load_recipe
        from autodistil_evo.distill.trainer import plan
        from autodistil_evo.spaces import load_space

        recipe = write_recipe("recipes/quickstart.yaml", OUT / "recipes" / "superlm-trained.yaml",
                              space=str(Path(SPACE).resolve()), rewire=True, order_hidden=True, seq_len=64,
                              micro_batch=BATCH, lr=LR, relation_weight=0.0, **EMBEDDING)
        space = load_space(SPACE)
        per_step = plan(load_recipe(recipe), space, [space.subspace("keep")], 1, 1)["total_flops"]
        steps = max(round((args.superlm_share * st_flops - trained.meta["train_flops"]) / per_step), 1)
        recipe = write_recipe(recipe, OUT / "recipes" / "superlm-trained.yaml", warmup_steps=max(round(WARMUP * steps), 1))
        return searched(OUT / "run-trained", OUT / "search-trained", recipe, steps)

    def pick(budget, path="tool"):
        run, search, superlm_run = superlms[path]

        def choose():
            scored, superlm = [], superlm_run.superlm.eval()
            for arch in front_within(search, budget["flops"], args.candidates):
                superlm.set_active(Arch.from_dict(arch))
                scored.append({**arch, "stsb_dev_step0": judge.dev(lambda ids, mask: superlm(ids, mask)[0])})
            return max(scored, key=lambda r: r["stsb_dev_step0"])

        return keep("pick/" + ("" if path == "tool" else f"{path}/") + str(budget["layers"]), choose)

    packed = build_corpus(["embedded"], teacher.tokenizer, 64, 0.05)
    for seed in range(args.seeds):
        texts = None
        for budget in budgets:
            k = budget["layers"]
            spread = [(i * shape.layers) // k for i in range(k)]

            def st_row(k=k, spread=spread, seed=seed):
                nonlocal texts
                texts = texts or training_texts(packed, teacher.tokenizer, seed, args.st_steps)
                folder = OUT / "st-recipe" / f"k{k}-s{seed}"
                flops = st_recipe(teacher.source, shape, spread, seed, texts, args.st_steps, folder)
                from transformers import AutoModel

                model = AutoModel.from_pretrained(folder / "model").eval()
                return {"layers": spread, "train_flops": flops, "steps": args.st_steps,
                        **judge(model, pooling_of(folder / "model"))}

            st = keep(f"st-recipe/{k}/{seed}", st_row)
            if "tool-trained" not in superlms:  # its training is a share of the smallest budget (seed 0's)
                superlms["tool-trained"] = (OUT / "run-trained", OUT / "search-trained", trained_superlm(st["train_flops"]))
            for path, recipe_changes, init in TRAINED:
                if path in DIAGNOSTIC and not args.diagnostics or path == "tool+relations" and seed >= args.relations_seeds:
                    continue
                source, _, superlm_run = superlms["tool-trained" if path == "tool-trained" else "tool"]
                chosen = pick(budget, "tool-trained" if path == "tool-trained" else "tool")
                arch = Arch.from_dict({g: chosen[g] for g in (*GENES, "layer_ids")})
                # as the trainer counts a step (`step_flops`): the blocks only where the relation KL is trained
                blocks = bool(recipe_changes["relation_weight"])
                per_step = step_flops([arch], dims, teacher_tap_flops(shape, -1, 64) if blocks else 0, 64, BATCH, False,
                                      blocks, SENTENCE_LEN, count_flops(full, dims, SENTENCE_LEN))
                # a SuperLM's training (the importance pass included) counts against its student: it trains that much less
                spent = superlm_run.meta["train_flops"] if init == "superlm" else 0
                steps = max(round((st["train_flops"] - spent) / per_step), 1)

                def trained_row(path=path, changes=recipe_changes, init=init, seed=seed, k=k, arch=arch, steps=steps,
                                source=source):
                    recipe = write_recipe("recipes/quickstart.yaml", OUT / "recipes" / f"{path}.yaml",
                                          space=str(Path(SPACE).resolve()), seq_len=64, micro_batch=BATCH, lr=LR,
                                          warmup_steps=max(round(WARMUP * steps), 1), **EMBEDDING, **changes)
                    out = OUT / path / f"k{k}-s{seed}"
                    cli("train-student", source, "--arch", json.dumps({"subspace": "keep", **arch.to_dict()}), "--recipe",
                        recipe, "--init", init, "--steps", steps, "--seed", seed, "--out", out, "--resume")
                    from transformers import AutoModel

                    from autodistil_evo.export.trust import model_folder

                    provenance = json.loads((out / "model" / "autodistil_provenance.json").read_text())
                    folder, remote_code = model_folder(out / "model", False)  # our own model file only
                    model = AutoModel.from_pretrained(folder, trust_remote_code=remote_code).eval()
                    return {"layers": provenance["teacher_layers"], "train_flops": provenance["train_flops"],
                            "steps": steps, **judge(model, pooling_of(out / "model"))}

                keep(f"{path}/{k}/{seed}", trained_row)

    latencies = measure_latencies(teacher, results, budgets, judge)
    report(args, budgets, results, judge, latencies)


def measure_latencies(teacher, results, budgets, judge) -> dict:
    """Batch-1 CPU latency of each (path, budget)'s model (seed 0's: seeds share the shape), measured one after
    another at the end, on a machine doing nothing else: the runs' own timings may overlap other work."""
    from transformers import AutoModel

    from autodistil_evo.export.trust import model_folder

    out = {}
    for budget in budgets:
        k = budget["layers"]
        for path in PATHS:
            if path == "layer-drop":
                model = teacher_cut(teacher, results[f"layer-drop/{k}"]["layers"])
            else:
                folder = OUT / path / f"k{k}-s0" / "model"
                if not folder.is_dir():
                    continue
                folder, remote_code = model_folder(folder, False)  # our own model file only
                model = AutoModel.from_pretrained(folder, trust_remote_code=remote_code).eval()
            out[(path, k)] = latency_ms(model, judge.tokenizer, judge.splits["test"].first[0], repeats=50)
    return out


def report(args, budgets, results, judge, latencies):
    rows = []
    for budget in budgets:
        k = budget["layers"]
        for path in PATHS:
            runs = [results[f"{path}/{k}"]] if path == "layer-drop" else \
                [results[f"{path}/{k}/{s}"] for s in range(args.seeds) if f"{path}/{k}/{s}" in results]
            if not runs:
                continue
            pick = None if path in ("layer-drop", "st-recipe") else \
                results.get(f"pick/{path}/{k}" if path == "tool-trained" else f"pick/{k}")
            stsb = [r["stsb_test"] for r in runs]
            rows.append({
                "budget_flops": budget["flops"], "budget_layers": k, "path": path,
                "id": pick["id"] if pick else f"{path}-L{k}",
                "layers": runs[0]["layers"], "flops": pick["flops"] if pick else budget["flops"],
                "train_flops": statistics.mean(r["train_flops"] for r in runs),
                "stsb_mean": statistics.mean(stsb), "stsb_sem": sem(stsb),
                "stsb_dev_mean": statistics.mean(r["stsb_dev"] for r in runs),
                "fidelity": statistics.mean(r["fidelity"] for r in runs),
                "recall_at_10": statistics.mean(r["recall_at_10"] for r in runs),
                "latency_ms": latencies.get((path, k), statistics.mean(r["latency_ms"] for r in runs)),
                "seeds": len(runs), "stsb_runs": stsb,
                **({"arch": {g: pick[g] for g in (*GENES, "layer_ids")}} if pick else {}),
            })

    def row(path, k):
        return next((r for r in rows if r["path"] == path and r["budget_layers"] == k), None)

    # The tool's path for the goal: the untrained ordered teacher searched as it is, or the SuperLM trained on the
    # embedding term, whichever scores higher on STS-B dev over the budgets (chosen on dev, reported on test).
    complete = [p for p in ("tool", "tool-trained") if all(row(p, b["layers"]) for b in budgets)] or ["tool"]
    tool_path = max(complete, key=lambda p: statistics.mean(row(p, b["layers"])["stsb_dev_mean"] for b in budgets
                                                            if row(p, b["layers"])))
    verdicts, wins, losses = [], 0, 0
    for budget in budgets:
        tool, st = row(tool_path, budget["layers"]), row("st-recipe", budget["layers"])
        if not tool or not st:
            continue
        # paired by seed (the same text order and initial weights' seed): the standard error of the per-seed differences
        paired = [a - b for a, b in zip(tool["stsb_runs"], st["stsb_runs"])]
        diff = statistics.mean(paired)
        se = sem(paired) if len(paired) > 1 else math.hypot(tool["stsb_sem"], st["stsb_sem"])
        outcome = "win" if diff > 2 * se else "loss" if diff < -2 * se else "tie"
        wins, losses = wins + (outcome == "win"), losses + (outcome == "loss")
        verdicts.append({"budget_layers": budget["layers"], "difference": diff, "se": se, "outcome": outcome})
    teacher_stsb = 82.03
    small = [r["stsb_mean"] for r in rows if r["path"] == tool_path and r["budget_layers"] <= 2]
    goal = {"tool_path": tool_path, "beats_st_recipe": wins >= 2 and losses == 0, "wins": wins, "losses": losses,
            "stsb_78_at_third": bool(small) and max(small) >= 78.0, "best_tool_stsb_at_third": max(small) if small else None}
    write_results("embedding_students", {
        "budgets": [{"layers": b["layers"], "flops": b["flops"]} for b in budgets],
        "test_pairs": len(judge.splits["test"]), "dev_pairs": len(judge.splits["dev"]),
        "fidelity_sentences": len(judge.texts), "st_steps": args.st_steps, "batch": BATCH, "lr": LR,
        "sentence_len": SENTENCE_LEN, "space": SPACE, "search": {"population": args.population,
                                                                 "generations": args.generations},
        "teacher_stsb_test": teacher_stsb, "rows": rows, "verdicts": verdicts, "goal": goal})
    table = markdown_table(
        ["budget", "path", "student", "teacher layers", "GFLOPs", "train PFLOPs", "STS-B test", "STS-B dev", "fidelity",
         "recall@10", "latency ms"],
        [(f"{r['budget_layers']}/6", r["path"], r["id"], ",".join(map(str, r["layers"])), f"{r['flops'] / 1e9:.2f}",
          f"{r['train_flops'] / 1e15:.3f}", f"{r['stsb_mean']:.2f} ± {r['stsb_sem']:.2f}", f"{r['stsb_dev_mean']:.2f}",
          f"{r['fidelity']:.3f}", f"{r['recall_at_10']:.3f}", f"{r['latency_ms']:.1f}") for r in rows])
    def versus(path, other):
        pairs = [(b["layers"], row(path, b["layers"]), row(other, b["layers"])) for b in budgets]
        return ", ".join(f"{k}/6 {a['stsb_mean'] - o['stsb_mean']:+.2f}" for k, a, o in pairs if a and o) or \
            "not measured in this run (`make bench-studies` adds it)"

    spread_dev = []
    for budget in budgets:
        k, st = budget["layers"], row("st-recipe", budget["layers"])
        scan = results[f"layer-drop/{k}"]["dev_scan"]
        if st:
            spread_dev.append(f"{k}/6 {scan[str(st['layers'])]:.1f} -> {st['stsb_dev_mean']:.1f}")
    findings = (
        f"Against the teacher with its best layers kept and no training (layer-drop, the best of every subset on dev), "
        f"the tool's STS-B test ({tool_path}) differs by {versus(tool_path, 'layer-drop')}. A SuperLM trained on the "
        f"embedding term for {args.superlm_share:.0%} of the smallest budget's FLOPs, against the untrained ordered "
        f"teacher searched as it is (tool-trained - tool): {versus('tool-trained', 'tool')}. The "
        f"ordered cut against the same shape cut first-k (tool - searched-alone): {versus('tool', 'searched-alone')}. "
        f"Keeping the relation KL beside the embedding term at the same FLOPs (tool+relations - tool, one seed): "
        f"{versus('tool+relations', 'tool')}. sentence-transformers' recipe moves its evenly spread cut "
        f"on dev by {'; '.join(spread_dev)} at this compute ({args.st_steps} steps of {BATCH}).")
    verdict_text = "; ".join(f"{v['budget_layers']}/6: {v['outcome']} ({v['difference']:+.2f} ± {v['se']:.2f})"
                             for v in verdicts)
    write_section(
        "embedding_students",
        f"## Embedding students against sentence-transformers\n\n"
        f"**Goal {'met' if goal['beats_st_recipe'] else 'not met'}**: the tool (its `{tool_path}` row, the higher of "
        f"its two paths on STS-B dev) against sentence-transformers' own "
        f"recipe at equal training FLOPs, STS-B test (difference paired by seed ± its standard error): {verdict_text}. "
        f"STS-B 78 at 1/3 of the teacher's FLOPs or less: **{'met' if goal['stsb_78_at_third'] else 'not met'}** "
        f"(best {tool_path} row {goal['best_tool_stsb_at_third'] or float('nan'):.2f}; the teacher 82.03).\n\n{findings}\n\n"
        f"Machine: {machine()}. Budgets: the FLOPs of keeping 1, 2 or 3 of all-MiniLM-L6-v2's 6 layers. layer-drop: the "
        f"teacher's best k layers on STS-B dev, untrained. st-recipe: sentence-transformers' trainer and MSELoss on k "
        f"evenly spread layers, {args.st_steps} steps of {BATCH} texts. tool: the ordered teacher (rewire + "
        f"order_hidden) searched as it is on `{SPACE}` (LINAS, fidelity x FLOPs), the pick within the budget best "
        f"on dev, trained by `train-student` on the embedding term alone. searched-alone: that shape cut first-k from "
        f"the teacher, trained alike. tool+relations: the tool's student with the relation KL kept in the loss "
        f"(relation_weight 1, {args.relations_seeds} seed). tool-trained: the ordered teacher trained as a SuperLM on "
        f"the embedding term for {args.superlm_share:.0%} of the 1/6 budget's FLOPs (counted against each of its "
        f"students), searched and picked alike, its student trained from its subnet. Same text and equal training FLOPs for every trained path; "
        f"{args.seeds} seeds, "
        f"mean ± standard error; STS-B Spearman x 100 ({len(judge.splits['test'])} test pairs); fidelity and recall@10 "
        f"against the teacher on {len(judge.texts)} sentences; latency at batch 1 on the CPU.\n\n"
        f"Command: `{command()}`\n\n{table}\n")


if __name__ == "__main__":
    main()
