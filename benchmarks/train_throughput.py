"""Training throughput: SuperLM sandwich step (4 subnets) vs. distilling one standalone student.

Both run on the DeepSpeed engine with the same relation loss, teacher, batches and optimizer
config; the standalone student has the sub-space's largest arch. Reports optimizer-step time,
tokens/s of the batch, and subnet-tokens/s (tokens x subnets trained per second).
"""

import argparse
import statistics
import time

import torch
from report import command, machine, markdown_table, write_section

from autodistil_evo.data import build_corpus
from autodistil_evo.distill.loss import relation_loss
from autodistil_evo.distill.recipe import load_recipe
from autodistil_evo.distill.trainer import sandwich
from autodistil_evo.distributed import init_distributed
from autodistil_evo.spaces import load_space
from autodistil_evo.supernet import SuperLM
from autodistil_evo.teacher import RelationTap, load_teacher


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--subspace", default="base")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    import deepspeed

    init_distributed()
    recipe = load_recipe(args.recipe)
    space = load_space(recipe.space)
    sub = space.subspace(args.subspace)
    teacher = load_teacher(recipe.teacher_name)
    blocks = build_corpus(recipe.corpus, teacher.tokenizer, recipe.seq_len, recipe.heldout_fraction).train
    tap = RelationTap(teacher.model, recipe.teacher_layer)
    members = 2 + recipe.sandwich_random

    superlm = SuperLM(sub, space.dims(teacher.shape), dropout=recipe.dropout)
    superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
    student = superlm.extract(sub.largest()).train()
    student_tap_layer = student.encoder.layer[-1].attention.self
    captured = {}
    for part in ("query", "key", "value"):
        getattr(student_tap_layer, part).register_forward_hook(lambda m, i, o, part=part: captured.__setitem__(part, o))

    super_engine = deepspeed.initialize(model=superlm, model_parameters=superlm.parameters(),
                                        config=recipe.engine_config(members, 1000))[0]
    alone_engine = deepspeed.initialize(model=student, model_parameters=student.parameters(),
                                        config=recipe.engine_config(1, 1000))[0]

    def superlm_step(step, ids, mask, teacher_qkv):
        for arch in sandwich(sub, 0, step, recipe.sandwich_random):
            superlm.set_active(arch)
            _, _, qkv = super_engine(ids, mask, stop_at_last_qkv=True)
            super_engine.backward(relation_loss(teacher_qkv, qkv, mask, recipe.relation_heads))
            super_engine.step()

    def student_step(step, ids, mask, teacher_qkv):
        alone_engine(input_ids=ids, attention_mask=mask)
        qkv = tuple(captured[p] for p in ("query", "key", "value"))
        alone_engine.backward(relation_loss(teacher_qkv, qkv, mask, recipe.relation_heads))
        alone_engine.step()

    times = {"superlm": [], "student": []}
    for step in range(args.steps + 2):
        ids = blocks[step * recipe.micro_batch : (step + 1) * recipe.micro_batch]
        mask = torch.ones_like(ids)
        teacher_qkv = tap(teacher.model, ids, mask)
        for name, fn in (("superlm", superlm_step), ("student", student_step)):
            start = time.perf_counter()
            fn(step, ids, mask, teacher_qkv)
            if step >= 2:  # warm-up
                times[name].append(time.perf_counter() - start)
    tokens = recipe.micro_batch * recipe.seq_len
    s, a = statistics.median(times["superlm"]), statistics.median(times["student"])
    rows = [
        (f"SuperLM sandwich of {members}", f"{s * 1e3:.0f}", f"{tokens / s:.0f}", f"{members * tokens / s:.0f}"),
        (f"standalone student {sub.largest().key()}", f"{a * 1e3:.0f}", f"{tokens / a:.0f}", f"{tokens / a:.0f}"),
    ]
    table = markdown_table(["training", "optimizer step (ms)", "tokens/s", "subnet-tokens/s"], rows)
    write_section(
        "train_throughput",
        f"## Training throughput\n\nMachine: {machine()}. Sub-space `{args.subspace}` of `{recipe.space}`, teacher "
        f"{teacher.shape.name}, batch {recipe.micro_batch} x {recipe.seq_len}, median of {args.steps} steps after 2 "
        f"warm-up, teacher forward excluded (shared).\n\nCommand: `{command()}`\n\n{table}\n\n"
        f"A SuperLM step costs {s / a:.2f}x a standalone step of its largest student while training {members} "
        f"subnets; per subnet trained it runs at {members * a / s:.2f}x the standalone rate (the smaller sandwich "
        f"members are cheaper than the largest).\n",
    )


if __name__ == "__main__":
    main()
