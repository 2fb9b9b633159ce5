"""Train one SuperLM per sub-space: relation distillation from the teacher, sandwich sampling, DeepSpeed.

Every optimizer step trains the sub-space's largest and smallest arch plus `sandwich_random`
random ones on the same batch; DeepSpeed accumulates their gradients (each member is one of its
micro-steps) and steps once. A sub-space of one arch is standalone distillation of that arch:
its sandwich is the arch alone. Randomness is a function of (seed, step) alone: the archs, the
batch, the dropout masks. So a resumed run replays exactly what an uninterrupted one does.
"""

import json
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from autodistil_evo import __version__
from autodistil_evo.data import PackedCorpus, permute
from autodistil_evo.distill import checkpoint as ckpt
from autodistil_evo.distill.artifact import save_superlm
from autodistil_evo.distill.loss import hidden_loss, relation_loss_from_teacher, teacher_relations
from autodistil_evo.distill.recipe import Recipe
from autodistil_evo.distributed import device, init_distributed, mean_across_ranks
from autodistil_evo.errors import UserError
from autodistil_evo.faults import maybe_die
from autodistil_evo.fileio import read_jsonl, write_json, write_jsonl
from autodistil_evo.plots import new_figure, save_png
from autodistil_evo.spaces import SearchSpace, SubSpace, count_flops, mean_flops
from autodistil_evo.supernet import SuperLM
from autodistil_evo.teacher import RelationTap, Teacher


@dataclass
class TrainSettings:
    steps: int
    save_every: int
    keep_last: int
    seed: int
    resume: bool = False


def sandwich_size(subspace: SubSpace, n_random: int) -> int:
    return 1 if subspace.candidate_count() == 1 else 2 + n_random


def sandwich(subspace: SubSpace, seed: int, step: int, n_random: int) -> list:
    """Largest, smallest and `n_random` archs drawn gene by gene (layer by layer where per layer)
    from a (seed, step) generator; a one-arch sub-space's sandwich is that arch."""
    if subspace.candidate_count() == 1:
        return [subspace.largest()]
    rng = np.random.default_rng([seed, step])
    return [subspace.largest(), subspace.smallest(), *(subspace.sample(rng) for _ in range(n_random))]


def make_engine(recipe: Recipe, superlm: SuperLM, members: int, total_steps: int):
    """The DeepSpeed engine of a SuperLM; parameters the loss never reaches stay out of the optimizer."""
    import deepspeed

    untrained = superlm.untrained_by_distillation()
    params = [p for name, p in superlm.named_parameters() if name not in untrained]
    engine, _, _, _ = deepspeed.initialize(model=superlm, model_parameters=params,
                                           config=recipe.engine_config(members, total_steps))
    return engine


def fp32_state(engine, superlm: SuperLM, fallback: dict) -> dict:
    """The SuperLM's weights in fp32. Under bf16 / fp16 the module holds rounded copies and the
    optimizer the fp32 masters; parameters outside the optimizer never change, so `fallback` (their
    fp32 values before the engine cast them, by name) holds them exactly."""
    masters = {}
    optimizer = getattr(engine, "optimizer", None)
    low_groups = getattr(optimizer, "fp16_groups", None) or getattr(optimizer, "bf16_groups", None) or []
    if hasattr(optimizer, "fp32_groups"):
        high_groups = optimizer.fp32_groups
    elif hasattr(optimizer, "fp32_groups_flat"):  # DeepSpeed's fused fp16 optimizer keeps one flat master per group
        from torch._utils import _unflatten_dense_tensors

        high_groups = [_unflatten_dense_tensors(flat, group) for flat, group in zip(optimizer.fp32_groups_flat, low_groups)]
    else:
        high_groups = []
    for low, high in zip(low_groups, high_groups):
        for param, master in zip(low, high):
            masters[id(param)] = master
    state = {}
    for name, param in superlm.named_parameters():
        if id(param) in masters:
            state[name] = masters[id(param)]
        elif param.dtype == torch.float32:
            state[name] = param
        else:
            state[name] = fallback[name]
    return {name: value.detach().float().clone() for name, value in state.items()}


def distill_step(engine, superlm: SuperLM, archs: list, micro_batches: list, teacher_model, tap: RelationTap,
                 relation_heads: int, hidden_weight: float = 0.0) -> torch.Tensor:
    """One optimizer step. Per micro-batch the teacher runs once (to its tapped Q/K/V) and its
    relations are computed once; each sandwich member then runs to its last layer's Q/K/V, and its
    relation KL is back-propagated. With `hidden_weight` > 0 (a tap with `hidden=True`) the teacher
    runs through its tapped layer, each member through its last layer, and the weighted MSE of
    their hidden states is added. DeepSpeed accumulates the members' gradients and steps at the
    last one. Returns [relation KL, hidden MSE] per member as a [2, members] tensor: nothing here
    waits for the device."""
    losses = torch.zeros(2, len(archs), device=micro_batches[0].device)
    for ids in micro_batches:
        mask = torch.ones_like(ids)
        tapped = tap(teacher_model, ids, mask)
        relations = teacher_relations(tapped[:3], relation_heads, mask)
        for i, arch in enumerate(archs):
            superlm.set_active(arch)
            student_hidden, _, student_qkv = engine(ids, mask, stop_at_last_qkv=not hidden_weight)
            loss = relation_loss_from_teacher(relations, student_qkv, mask, relation_heads)
            losses[0, i] += loss.detach() / len(micro_batches)
            if hidden_weight:
                hidden = hidden_loss(superlm.distill_head(student_hidden), tapped[3], mask)
                losses[1, i] += hidden.detach() / len(micro_batches)
                loss = loss + hidden_weight * hidden
            engine.backward(loss)
            engine.step()
    return losses


def step_samples(step: int, per_step: int, n_samples: int, seed: int) -> torch.Tensor:
    """Indices of the global batch of `step`: each epoch is a seeded permutation of the training
    blocks, evaluated only at this step's positions (O(batch), whatever the corpus size)."""
    positions = np.arange(step * per_step, (step + 1) * per_step)
    epochs, offsets = positions // n_samples, positions % n_samples
    out = np.empty(per_step, dtype=np.int64)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        out[here] = permute(offsets[here], n_samples, seed * 1_000_003 + int(epoch))
    return torch.from_numpy(out)


def _plot_losses(metrics: list, path: Path, title: str):
    metrics = [m for m in metrics if "loss" in m]  # not the event rows (a changed --steps)
    fig, ax = new_figure(figsize=(7, 4))
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["loss"] for m in metrics], label="sandwich mean", color="black", linewidth=2)
    members = len(metrics[0]["member_losses"]) if metrics else 0
    for label, key in (("largest", 0), ("smallest", 1))[: 2 if members > 1 else 0]:
        ax.plot(steps, [m["member_losses"][key] for m in metrics], label=label, alpha=0.7)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("relation KL (Q-Q + K-K + V-V)")
    ax.set_title(title)
    ax.legend()
    save_png(fig, path)


class _StopRequest:
    """SIGINT sets a flag that the loop reads between optimizer steps (never mid-update)."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def superlm_meta(recipe: Recipe, space: SearchSpace, subspace: SubSpace, teacher: Teacher, step: int, teacher_spec,
                 corpus_store: dict) -> dict:
    return {
        "schema": 1,
        "package_version": __version__,
        "space": space.to_dict(),
        "space_file": space.source,
        "subspace": subspace.name,
        "teacher": {"spec": teacher_spec, "source": teacher.source, "shape": asdict(teacher.shape)},
        "step": step,
        "seed": recipe.seed,
        "seq_len": recipe.seq_len,
        "heldout_fraction": recipe.heldout_fraction,
        "corpus": list(recipe.corpus),
        "corpus_store": corpus_store,
        "relation_heads": recipe.relation_heads,
        "teacher_layer": recipe.teacher_layer,
        "hidden_weight": recipe.hidden_weight,
        "dropout": recipe.dropout,
        "precision": recipe.precision,
        "layer_norm_eps": teacher.layer_norm_eps,
        "pad_token_id": teacher.model.config.pad_token_id or 0,
    }


# Identity fields added after checkpoints were first written: an older checkpoint holds their default.
IDENTITY_DEFAULTS = {"hidden_weight": 0.0}


def _identity(recipe, space, subspace, teacher_shape, global_batch, corpus_fingerprint, untrained) -> dict:
    """What must not change between a run and its resume (the data too: its store's fingerprint)."""
    return {
        "precision": recipe.precision,
        "optimizer_excludes": sorted(untrained),
        "corpus_fingerprint": corpus_fingerprint,
        "space": space.to_dict(),
        "subspace": subspace.name,
        "teacher_shape": asdict(teacher_shape),
        "seq_len": recipe.seq_len,
        "global_batch": global_batch,
        "sandwich_random": recipe.sandwich_random,
        "relation_heads": recipe.relation_heads,
        "teacher_layer": recipe.teacher_layer,
        "hidden_weight": recipe.hidden_weight,
        "seed": recipe.seed,
    }


def train_subspace(
    recipe: Recipe,
    space: SearchSpace,
    subspace: SubSpace,
    teacher: Teacher,
    packed: PackedCorpus,
    out_dir: Path,
    settings: TrainSettings,
    teacher_spec: str,
    console,
) -> dict:
    """Train (or resume) one SuperLM into `out_dir`; returns a summary."""
    rank, world = init_distributed()
    is_main = rank == 0
    log = console.print if is_main else (lambda *a, **k: None)
    dev = device()
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    metrics_file = out_dir / "metrics.jsonl"
    per_step = recipe.micro_batch * recipe.accumulation * world
    train_blocks = packed.train

    torch.manual_seed(recipe.seed)
    superlm = SuperLM(
        subspace,
        space.dims(teacher.shape),
        layer_norm_eps=teacher.layer_norm_eps,
        dropout=recipe.dropout,
        pad_token_id=teacher.model.config.pad_token_id or 0,
        distill_width=teacher.shape.hidden if recipe.hidden_weight else None,
    )
    superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
    identity = _identity(recipe, space, subspace, teacher.shape, per_step, packed.fingerprint,
                         superlm.untrained_by_distillation())

    start_step, resumed_from = 0, None
    existing = ckpt.list_checkpoints(ckpt_dir)
    if existing and not settings.resume:
        raise UserError(f"{out_dir}: holds checkpoints of an earlier run; pass --resume to continue it or choose another --out")
    checkpoint = None
    if settings.resume and existing:
        checkpoint, skipped = ckpt.latest_usable(ckpt_dir, warn=lambda m: log(f"[yellow]warning:[/] {m}"))
        if checkpoint is None:
            raise UserError(f"{ckpt_dir}: no usable checkpoint to resume from: {'; '.join(skipped)}")
        kept = checkpoint.state.get("identity", {})
        differs = [k for k, v in identity.items() if kept.get(k, IDENTITY_DEFAULTS.get(k)) != v]
        if differs:
            raise UserError(f"{checkpoint.path}: cannot resume, the run differs in: {', '.join(differs)}")
        superlm.load_state_dict(checkpoint.model_state())
        start_step, resumed_from = checkpoint.step, checkpoint.path
    # fp32 values of the weights outside the optimizer: under bf16 / fp16 no master copy holds them
    untrained = superlm.untrained_by_distillation()
    initial = {name: p.detach().clone() for name, p in superlm.named_parameters() if name in untrained}

    members = sandwich_size(subspace, recipe.sandwich_random)
    if settings.steps == 0 or start_step >= settings.steps:
        engine = None
        superlm.to(dev)
    else:
        engine = make_engine(recipe, superlm, members, settings.steps)
        if checkpoint is not None:
            engine.optimizer.load_state_dict(checkpoint.optimizer_state())
            engine.lr_scheduler.load_state_dict(checkpoint.state["scheduler"])
            engine.global_steps = start_step
            engine.global_samples = start_step * per_step
    metrics = [m for m in read_jsonl(metrics_file) if m["step"] <= start_step] if is_main else []
    if is_main:
        write_jsonl(metrics_file, metrics)  # drop what came after the checkpoint we resume from

    def save(step):
        if not is_main:
            return
        state = fp32_state(engine, superlm, initial)
        extra = {
            "identity": identity,
            "scheduler": engine.lr_scheduler.state_dict() if engine else {},
            "rng": {"scheme": "torch/numpy generators seeded by (seed, step)", "seed": recipe.seed},
            "samples_seen": step * per_step,
            "total_steps": settings.steps,  # the learning-rate schedule was planned for this many steps
        }
        try:
            ckpt.save_checkpoint(ckpt_dir, step, state, engine.optimizer.state_dict(), extra)
        except OSError as e:
            raise UserError(
                f"{ckpt_dir}: cannot write the checkpoint of step {step} ({e.strerror or e}); "
                "earlier checkpoints are intact, free space or fix permissions and --resume"
            ) from None
        ckpt.prune(ckpt_dir, settings.keep_last)

    if resumed_from is not None:
        log(f"resuming {subspace.name} from {resumed_from} (step {start_step})")
        planned = checkpoint.state.get("total_steps")
        if planned is not None and planned != settings.steps and start_step < settings.steps:
            log(f"[yellow]warning:[/] {subspace.name}: the checkpoint's run was planned for {planned} steps, this one for "
                f"{settings.steps}; the learning-rate schedule is re-planned from step {start_step}, so the result will "
                f"not equal an uninterrupted {settings.steps}-step run")
            if is_main:
                event = {"step": start_step, "event": "steps_changed", "old_total": planned, "new_total": settings.steps}
                metrics.append(event)
                with open(metrics_file, "a") as f:
                    f.write(json.dumps(event) + "\n")
    teacher.model.to(dev, dtype=recipe.dtype)  # the teacher runs in the training precision (no grad)
    n_blocks = len(train_blocks)
    if n_blocks == 0:
        raise UserError(f"corpus gives no training block of {recipe.seq_len} tokens; add text or lower --seq-len")
    step = start_step
    interrupted = False
    if engine is not None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        engine.train()
        progress = Progress(
            TextColumn(f"[bold]{subspace.name}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.2f} step/s"),
            TimeRemainingColumn(),
            console=console,
            disable=not is_main,
        )
        tap = RelationTap(teacher.model, recipe.teacher_layer, hidden=bool(recipe.hidden_weight))
        with progress, _StopRequest() as stop, tap:
            task = progress.add_task("train", total=settings.steps, completed=start_step, loss=float("nan"), rate=0.0)
            while step < settings.steps:
                tick = time.perf_counter()
                torch.manual_seed(recipe.seed * 1_000_003 + step)  # dropout masks depend on (seed, step) only
                archs = sandwich(subspace, recipe.seed, step, recipe.sandwich_random)
                samples = step_samples(step, per_step, n_blocks, recipe.seed)
                mine = samples[rank * recipe.micro_batch * recipe.accumulation :][: recipe.micro_batch * recipe.accumulation]
                micro_batches = [train_blocks[mine[m * recipe.micro_batch : (m + 1) * recipe.micro_batch]].to(dev)
                                 for m in range(recipe.accumulation)]
                losses = distill_step(engine, superlm, archs, micro_batches, teacher.model, tap, recipe.relation_heads,
                                      recipe.hidden_weight)
                member_losses, hidden_losses = mean_across_ranks(losses.tolist())  # the step's one host synchronisation
                step += 1
                elapsed = time.perf_counter() - tick
                row = {
                    "step": step,
                    "loss": sum(member_losses) / members,
                    "member_losses": member_losses,
                    "archs": [a.key() for a in archs],
                    "lr": engine.get_lr()[0],
                    "tokens_per_s": per_step * recipe.seq_len / elapsed,
                }
                if recipe.hidden_weight:  # "loss" stays the relation KL, the quantity the search's proxy measures
                    row["hidden_loss"] = sum(hidden_losses) / members
                if is_main:
                    metrics.append(row)
                    with open(metrics_file, "a") as f:
                        f.write(json.dumps(row) + "\n")
                progress.update(task, completed=step, loss=row["loss"], rate=1.0 / elapsed)
                stop_now = mean_across_ranks([float(stop.requested)])[0] > 0
                if step % settings.save_every == 0 or step == settings.steps or stop_now:
                    save(step)
                if stop_now:
                    interrupted = True
                    break
                maybe_die("train-step", step)
    if interrupted:
        return {"subspace": subspace.name, "step": step, "interrupted": True}
    if engine is not None and recipe.precision != "fp32":  # ship the fp32 masters, not the rounded copies
        masters = fp32_state(engine, superlm, initial)  # before the cast: it tells rounded copies by dtype
        superlm.float().load_state_dict(masters)
    if is_main:
        meta = superlm_meta(recipe, space, subspace, teacher, step, teacher_spec, packed.record())
        save_superlm(out_dir, superlm, meta)
        if metrics:
            _plot_losses(metrics, out_dir / "loss.png", f"SuperLM '{subspace.name}' of {space.name}")
    return {
        "subspace": subspace.name,
        "step": step,
        "interrupted": False,
        "final_loss": next((m["loss"] for m in reversed(metrics) if "loss" in m), None),
        "resumed_from": str(resumed_from) if resumed_from else None,
    }


def plan(recipe: Recipe, space: SearchSpace, subspaces: list, steps: int, world_size: int) -> dict:
    """What a run would do, from the recipe alone (no weights, no data): for --dry-run."""
    teacher = recipe.teacher_shape()
    space.validate_against(teacher)
    members = {sub.name: sandwich_size(sub, recipe.sandwich_random) for sub in subspaces}
    engine_config = recipe.engine_config(max(members.values()), steps)
    dims = space.dims(teacher)
    global_batch = recipe.micro_batch * recipe.accumulation * world_size
    teacher_flops = count_flops(teacher.arch(), teacher.dims(), recipe.seq_len)
    per_subspace = []
    for sub in subspaces:
        # forward + backward ~ 3x forward for each sandwich member; the teacher only runs forward.
        member_flops = 3 * count_flops(sub.largest(), dims, recipe.seq_len)
        if members[sub.name] > 1:
            member_flops += 3 * (count_flops(sub.smallest(), dims, recipe.seq_len)
                                 + recipe.sandwich_random * mean_flops(sub, dims, recipe.seq_len))
        per_subspace.append(
            {"subspace": sub.name, "candidates": sub.candidate_count(), "sandwich": members[sub.name],
             "flops": steps * global_batch * (teacher_flops + member_flops)}
        )
    return {
        "recipe": recipe.source,
        "teacher": teacher.name,
        "world_size": world_size,
        "micro_batch": recipe.micro_batch,
        "accumulation": recipe.accumulation,
        "global_batch": global_batch,
        "sandwich": max(members.values()),  # the largest sub-space's; one-arch sub-spaces train alone
        "deepspeed_micro_steps_per_step": engine_config["gradient_accumulation_steps"],
        "optimizer": f"{engine_config['optimizer']['type']} lr {engine_config['optimizer']['params'].get('lr')}",
        "steps": steps,
        "precision": recipe.precision,
        "seq_len": recipe.seq_len,
        "tokens_per_subspace": steps * global_batch * recipe.seq_len,
        "subspaces": per_subspace,
        "total_flops": sum(p["flops"] for p in per_subspace),
    }


def run_training(recipe: Recipe, space: SearchSpace, subspace_name: str, run_dir, teacher_spec, settings: TrainSettings, console):
    """`autodistil-evo train`: each selected sub-space's SuperLM in turn, into RUN_DIR/<subspace>/."""
    from autodistil_evo.data import build_corpus, corpus_progress
    from autodistil_evo.fileio import check_output_dir, directory_lock, prepare_output_dir
    from autodistil_evo.teacher import load_teacher

    # Everything is checked before anything is written.
    subspaces = space.select(subspace_name)
    recipe.engine_config(2 + recipe.sandwich_random, settings.steps)
    check_output_dir(run_dir, "run directory")
    if recipe.precision == "fp16" and not torch.cuda.is_available():
        raise UserError(f"{recipe.source}: precision fp16 needs a CUDA GPU (DeepSpeed has no fp16 training on CPU); "
                        "use bf16 or fp32")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = recipe.tf32
        torch.backends.cudnn.allow_tf32 = recipe.tf32
    rank, _ = init_distributed()
    teacher = load_teacher(teacher_spec)
    space.validate_against(teacher.shape)
    if teacher_spec == recipe.teacher_name and replace(teacher.shape, name="") != replace(recipe.teacher_shape(), name=""):
        raise UserError(f"{recipe.source}: teacher: recorded shape differs from the loaded teacher {teacher.source}")
    packed = build_corpus(recipe.corpus, teacher.tokenizer, recipe.seq_len, recipe.heldout_fraction,
                          progress=corpus_progress(console) if rank == 0 else None,
                          warn=lambda m: console.print(f"[yellow]warning:[/] {m}"))
    run_dir = prepare_output_dir(run_dir, "run directory")
    results = []
    lock = directory_lock(run_dir, warn=console.print) if rank == 0 else nullcontext()
    with lock:
        for sub in subspaces:
            result = train_subspace(recipe, space, sub, teacher, packed, run_dir / sub.name, settings, teacher_spec, console)
            results.append(result)
            if result["interrupted"]:
                break
        if rank == 0:
            write_json(run_dir / "run.json", {"recipe": recipe.to_dict(), "space_file": space.source, "teacher": teacher_spec})
    return results

