"""Searched students vs hand-designed shapes at the same FLOPs.

For each hand-designed shape: (a) the searched student picked by `select --where flops<=<its FLOPs>
--pick min-loss`, (b) the hand shape taken from the same SuperLM, (c) the hand shape distilled
alone (a one-arch space, same recipe and number of steps) — all fine-tuned with the same budget.
"""

import argparse

import yaml
from common import WORK, cli, ensure_run, export_arch, finetune_accuracy
from k_subspaces import BUDGET, select_under
from report import command, machine, markdown_table, write_section

from autodistil_evo.spaces import Arch, count_flops, load_space

HAND = [
    ("BERT proportions, 5/6 width", "base", {"layers": 6, "heads": 10, "hidden": 320, "mlp_ratio": 4.0}),
    ("BERT proportions, 5 layers, 3/4 width", "base", {"layers": 5, "heads": 9, "hidden": 288, "mlp_ratio": 4.0}),
    ("uniformly scaled down", "small", {"layers": 6, "heads": 8, "hidden": 160, "mlp_ratio": 4.0}),
]


def distil_alone(name, arch, steps):
    """Train the hand shape by itself: a space whose only candidate it is, no random sandwich members."""
    folder = WORK / f"alone-{name}"
    run = folder / "run"
    if not (run / "hand" / "superlm.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        space = yaml.safe_load(open("spaces/minilm-l6.yaml"))
        space["name"] = f"hand-{name}"
        space["subspaces"] = {"hand": {k: [v] for k, v in arch.items()}}
        (folder / "space.yaml").write_text(yaml.safe_dump(space))
        recipe = yaml.safe_load(open("recipes/quickstart.yaml"))
        recipe.update(space=str(folder / "space.yaml"), sandwich_random=0, steps=steps)
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        cli("train", "--recipe", folder / "recipe.yaml", "--out", run, "--resume")
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="training steps, as the quickstart SuperLMs had")
    args = parser.parse_args()
    run = ensure_run(WORK / "quickstart-run")
    search = WORK / "k3-search"
    cli("evolve", run, "--out", search, "--population", 12, "--generations", 4, "--resume")
    space = load_space("spaces/minilm-l6.yaml")
    rows = []
    for index, (label, subspace, arch) in enumerate(HAND):
        flops = count_flops(Arch.from_dict(arch), space.dims(), space.seq_len)
        picked = select_under(search, flops)
        searched = export_arch(run, picked["subspace"], {g: picked[g] for g in arch}, WORK / "students" / f"searched-{picked['id']}")
        from_superlm = export_arch(run, subspace, arch, WORK / "students" / f"hand-superlm-{index}")
        alone_run = distil_alone(str(index), arch, args.steps)
        alone = export_arch(alone_run, "hand", arch, WORK / "students" / f"hand-alone-{index}")
        accuracy = {name: finetune_accuracy(path, BUDGET)["test_accuracy"]
                    for name, path in (("searched", searched), ("superlm", from_superlm), ("alone", alone))}
        print(label, accuracy, flush=True)
        rows.append((f"{label}: {Arch.from_dict(arch).key()} ({flops / 1e9:.2f} GFLOPs)",
                     f"{picked['id']} ({picked['flops'] / 1e9:.2f} GFLOPs): {accuracy['searched']:.3f}",
                     f"{accuracy['superlm']:.3f}", f"{accuracy['alone']:.3f}"))
    table = markdown_table(["hand-designed shape", "searched student (<= its FLOPs)", "hand shape from SuperLM",
                            f"hand shape distilled alone ({args.steps} steps)"], rows)
    write_section(
        "vs_handpicked",
        f"## Searched vs hand-designed students\n\nMachine: {machine()}. Quickstart SuperLMs and search; test accuracy "
        f"after fine-tuning on the embedded fresh/rotten task with the same budget ({BUDGET}, seed 0).\n\n"
        f"Command: `{command()}`\n\n{table}\n",
    )


if __name__ == "__main__":
    main()
