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
from autodistil_evo.data import PackedCorpus, block_sentences, permute, proxy_sample
from autodistil_evo.distill import checkpoint as ckpt
from autodistil_evo.distill.artifact import save_superlm
from autodistil_evo.distill.loss import EmbeddingTerm, hidden_loss, relation_loss_from_teacher, teacher_relations
from autodistil_evo.distill.recipe import Recipe
from autodistil_evo.distill.rewire import importance, rewired_state
from autodistil_evo.distributed import device, init_distributed, mean_across_ranks
from autodistil_evo.errors import UserError
from autodistil_evo.faults import maybe_die
from autodistil_evo.fileio import read_jsonl, reported_write, tensor_bytes, write_json, write_jsonl
from autodistil_evo.plots import new_figure, save_png
from autodistil_evo.spaces import Arch, SearchSpace, SubSpace, TeacherShape, count_flops, mean_flops
from autodistil_evo.stopping import StopRequest
from autodistil_evo.supernet import SuperLM, stride_layers
from autodistil_evo.teacher import RelationTap, Teacher


@dataclass
class TrainSettings:
    steps: int
    save_every: int
    keep_last: int
    seed: int
    resume: bool = False


@dataclass
class StudentStart:
    """What `train-student` trains: one arch alone, in a SuperLM built for it (`SubSpace.of_arch`), starting
    from a trained SuperLM's subnet (`init` "superlm", `source` that SuperLM) or the teacher ("teacher")."""

    arch: Arch
    init: str
    source: SuperLM | None
    teacher_shape: TeacherShape  # the teacher its SuperLM was distilled from
    origin: dict  # where it came from, for superlm.json and the model card (source, id, SuperLM sha256, FLOPs)
    channel_order: torch.Tensor | None = None  # the source SuperLM's hidden order (its `hidden_order`), if any

    def identity(self) -> dict:
        return {"arch": self.arch.to_dict(), "init": self.init, "source_sha256": self.origin.get("superlm_sha256")}


def alone_arch(subspace: SubSpace, student: Arch | None = None) -> Arch | None:
    """The arch a run trains by itself: a student's, or a one-arch sub-space's; None for a sandwich."""
    if student is not None:
        return student
    return subspace.largest() if subspace.candidate_count() == 1 else None


def sandwich_size(subspace: SubSpace, n_random: int, student: Arch | None = None) -> int:
    return 1 if alone_arch(subspace, student) is not None else 2 + n_random


def sandwich(subspace: SubSpace, seed: int, step: int, n_random: int, student: Arch | None = None) -> list:
    """Largest, smallest and `n_random` archs drawn gene by gene (layer by layer where per layer)
    from a (seed, step) generator; a run of one arch (a student, a one-arch sub-space) trains it alone."""
    alone = alone_arch(subspace, student)
    if alone is not None:
        return [alone]
    rng = np.random.default_rng([seed, step])
    return [subspace.largest(), subspace.smallest(), *(subspace.sample(rng) for _ in range(n_random))]


def teacher_tap_flops(shape: TeacherShape, teacher_layer: int, seq_len: int, whole_layer: bool = False) -> int:
    """FLOPs of the teacher's forward per sequence as the tap runs it: its layers up to the tapped one, that one
    to its Q/K/V (`whole_layer`: to its output, for a term on the hidden state); the rest never runs."""
    full = shape.arch()
    return count_flops(Arch(teacher_layer % shape.layers + 1, full.heads, full.hidden, full.mlp_ratio), shape.dims(),
                       seq_len, stop_at_last_qkv=not whole_layer)


def step_flops(archs: list, dims, teacher_flops: int, seq_len: int, sequences: int, whole_last_layer: bool = False,
               blocks_run: bool = True, sentence_len: int = 0, teacher_sentence_flops: int = 0) -> int:
    """Training FLOPs of one optimizer step over `sequences` sequences: the teacher's forward plus forward +
    backward (3x the forward, the usual estimate) of every member trained, from the exact per-arch counts of
    what runs: each member's last layer stops after its Q/K/V unless a term needs its output (`whole_last_layer`);
    with no term on the blocks (`blocks_run` False: the embedding term alone) they are not run. The embedding
    term (`sentence_len` > 0) adds, per sequence, the teacher's whole forward of one text
    (`teacher_sentence_flops`) and each member's forward + backward of it."""
    total = teacher_flops + sum(3 * count_flops(a, dims, seq_len, not whole_last_layer) for a in archs) if blocks_run else 0
    if sentence_len:
        total += teacher_sentence_flops + sum(3 * count_flops(a, dims, sentence_len) for a in archs)
    return sequences * total


def make_engine(recipe: Recipe, superlm: SuperLM, members: int, total_steps: int):
    """The DeepSpeed engine of a SuperLM; parameters the loss never reaches stay out of the optimizer."""
    import deepspeed

    untrained = superlm.untrained_by_distillation()
    params = [p for name, p in superlm.named_parameters() if name not in untrained]
    engine, _, _, _ = deepspeed.initialize(model=superlm, model_parameters=params,
                                           config=recipe.engine_config(members, total_steps))
    if engine.dp_world_size == 1:  # nothing to all-reduce: DeepSpeed would still flatten and copy back every gradient
        engine.enable_backward_allreduce = False
    clip = engine.gradient_clipping()
    # The clipping of fp32 weights (fp32 and bf16 autocast) in one multi-tensor call, not a norm per parameter.
    engine.clip_fp32_gradients = lambda: torch.nn.utils.clip_grad_norm_(
        [p for p in params if p.grad is not None], clip, foreach=True)
    return engine


def fp32_state(engine, superlm: SuperLM, fallback: dict) -> dict:
    """The SuperLM's weights in fp32. Under fp16 (DeepSpeed's) the module holds rounded copies and the
    optimizer the fp32 masters (bf16 runs under autocast: the module's weights are fp32); parameters outside the optimizer never change, so `fallback` (their
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
                 relation_heads: int, hidden_weight: float = 0.0, embedding: EmbeddingTerm | None = None,
                 sentences: list | None = None, relation_weight: float = 1.0) -> torch.Tensor:
    """One optimizer step. Per micro-batch the teacher runs once (to its tapped Q/K/V) and its relations
    are computed once; each sandwich member then runs to its last layer's Q/K/V, and its relation KL
    (x `relation_weight`) is back-propagated. With `hidden_weight` > 0 (a tap with `hidden=True`) the teacher
    runs through its tapped layer and each member through its last layer, and the weighted hidden-state MSE
    is added. With `embedding`, the teacher and each member also embed the micro-batch's `sentences`
    ((ids, mask), `data.block_sentences`) whole, and the embedding term is added. DeepSpeed accumulates the
    members' gradients and steps at the last one. Returns [relation KL, hidden MSE, embedding term] per member
    as a [3, members] tensor (the relation KL NaN where no term runs on the blocks): nothing here waits for the device."""
    on_blocks = bool(relation_weight or hidden_weight)  # else the embedding term alone: the blocks are not run
    losses = torch.zeros(3, len(archs), device=micro_batches[0].device)
    if not on_blocks:
        losses[0] = float("nan")
    low = engine.torch_autocast_dtype() if engine.torch_autocast_enabled() else None
    with superlm.low_precision_weights(low):  # weights change only at the last member's step
        for m, ids in enumerate(micro_batches):
            mask = None  # packed blocks: nothing is padded, so no mask (fused attention, no host-side mask check)
            if on_blocks:
                tapped = tap(teacher_model, ids, mask)
                relations = teacher_relations(tapped[:3], relation_heads, mask)
            if embedding is not None:
                sentence_ids, sentence_mask = sentences[m]
                target = embedding.target(tap.last_hidden(teacher_model, sentence_ids, sentence_mask), sentence_mask)
            for i, arch in enumerate(archs):
                superlm.set_active(arch)
                loss = 0.0
                if on_blocks:
                    student_hidden, _, student_qkv = engine(ids, mask, stop_at_last_qkv=not hidden_weight)
                    relation = relation_loss_from_teacher(relations, student_qkv, mask, relation_heads)
                    losses[0, i] += relation.detach() / len(micro_batches)
                    loss = relation_weight * relation
                if hidden_weight:
                    head = superlm.distill_head  # outside the engine's autocast: in its weights' dtype
                    hidden = hidden_loss(head(student_hidden.to(head.weight.dtype)), tapped[3], mask)
                    losses[1, i] += hidden.detach() / len(micro_batches)
                    loss = loss + hidden_weight * hidden
                if embedding is not None:
                    sentence_hidden, _, _ = engine(sentence_ids, sentence_mask)
                    term = embedding(sentence_hidden, sentence_mask, target)
                    losses[2, i] += term.detach() / len(micro_batches)
                    loss = loss + embedding.weight * term
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


def superlm_meta(recipe: Recipe, space: SearchSpace, subspace: SubSpace, teacher: Teacher, step: int, teacher_spec,
                 corpus_store: dict, train_flops: int, student: StudentStart | None = None,
                 channel_order: torch.Tensor | None = None, layer_map: list | None = None) -> dict:
    meta = {
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
        "embedding_weight": recipe.embedding_weight,
        "embedding_loss": recipe.embedding_loss,
        "sentence_len": recipe.sentence_len,
        "relation_weight": recipe.relation_weight,
        "rewire": recipe.rewire,
        "order_hidden": recipe.order_hidden,
        "dropout": recipe.dropout,
        "precision": recipe.precision,
        "layer_norm_eps": teacher.layer_norm_eps,
        "pad_token_id": teacher.model.config.pad_token_id or 0,
        "train_flops": train_flops,  # this run's steps; a student's inherited FLOPs are in "student"
    }
    meta["teacher_layers"] = layer_map  # SuperLM layer i was cut from the teacher's layer teacher_layers[i]
    if channel_order is not None:  # SuperLM channel j is the teacher's channel hidden_order[j]
        meta["hidden_order"] = channel_order.tolist()
    if student is not None:
        meta["student"] = {"arch": student.arch.to_dict(), "init": student.init, **student.origin}
    return meta


# Training blocks the importance of `rewire` is measured on.
REWIRE_BLOCKS = 64

# Identity fields added after checkpoints were first written: an older checkpoint holds their default.
IDENTITY_DEFAULTS = {"hidden_weight": 0.0, "embedding_weight": 0.0, "student": None, "rewire": False, "order_hidden": False,
                     "precision_path": "engine", "relation_weight": 1.0, "embedding_term": None}


def _embedding_identity(recipe: Recipe):
    """How the embedding term is computed. Checkpoints from before it ran on sentences lack it (None): a run
    with the old term on packed blocks cannot resume as one on sentences."""
    if not recipe.embedding_weight:
        return None
    return {"text": "sentences", "loss": recipe.embedding_loss, "sentence_len": recipe.sentence_len}


def _identity(recipe, space, subspace, teacher_shape, global_batch, corpus_fingerprint, untrained, student) -> dict:
    """What must not change between a run and its resume (the data too: its store's fingerprint)."""
    return {
        "precision": recipe.precision,
        # bf16 runs before autocast kept DeepSpeed's bf16 optimizer state, which the torch optimizer cannot read
        "precision_path": "autocast" if recipe.precision == "bf16" else "engine",
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
        "embedding_weight": recipe.embedding_weight,
        "embedding_term": _embedding_identity(recipe),
        "relation_weight": recipe.relation_weight,
        "rewire": recipe.rewire,
        "order_hidden": recipe.order_hidden,
        "seed": recipe.seed,
        "student": student.identity() if student else None,
    }


class SubspaceTraining:
    """One SuperLM's training in its phases: build, restore, the loop, save. `train_subspace` runs them."""

    def __init__(self, recipe: Recipe, space: SearchSpace, subspace: SubSpace, teacher: Teacher, packed: PackedCorpus,
                 out_dir: Path, settings: TrainSettings, console, student: StudentStart | None = None):
        self.recipe, self.space, self.subspace, self.teacher, self.packed = recipe, space, subspace, teacher, packed
        self.out_dir, self.settings, self.console, self.student = out_dir, settings, console, student
        self.rank, self.world = init_distributed()
        self.is_main = self.rank == 0
        self.ckpt_dir, self.metrics_file = out_dir / "checkpoints", out_dir / "metrics.jsonl"
        self.per_step = recipe.micro_batch * recipe.accumulation * self.world
        # a student runs all of its own SuperLM's layers; `layer_map` names the teacher's they were cut from
        self.student_arch = student.arch.strided() if student else None
        self.layer_map = (student.origin["teacher_layers"] if student and "teacher_layers" in student.origin
                          else stride_layers(subspace.depth, teacher.shape.layers))
        self.members = sandwich_size(subspace, recipe.sandwich_random, self.student_arch)
        self.dims = space.dims(teacher.shape)
        self.teacher_flops = teacher_tap_flops(teacher.shape, recipe.teacher_layer, recipe.seq_len, recipe.blocks_whole)
        self.teacher_sentence_flops = count_flops(teacher.shape.arch(), teacher.shape.dims(), recipe.sentence_len)
        self.engine, self.checkpoint, self.start_step, self.metrics = None, None, 0, []
        # `rewire` (unless the weights come from a SuperLM subnet): the teacher forwards that measure
        # importance are spent before step 0 and counted as training.
        ordered = recipe.rewire or recipe.order_hidden
        self.rewire_blocks = min(REWIRE_BLOCKS, len(packed.train)) if ordered and not (student and student.init == "superlm") else 0
        self.rewire_flops = self.rewire_blocks * count_flops(teacher.shape.arch(), teacher.shape.dims(), recipe.seq_len)
        self.spent = (0, self.rewire_flops)  # (step, training FLOPs of the steps before it)
        self.channel_order = None  # SuperLM channel j is the teacher's channel channel_order[j] (order_hidden)

    def log(self, *args, **kwargs):
        if self.is_main:
            self.console.print(*args, **kwargs)

    def archs(self, step: int) -> list:
        return sandwich(self.subspace, self.recipe.seed, step, self.recipe.sandwich_random, self.student_arch)

    def flops_until(self, step: int) -> int:
        """Training FLOPs of steps 0..step-1: exact, since each step's archs depend on (seed, step) alone."""
        done, spent = self.spent
        if step < done:
            done, spent = 0, self.rewire_flops
        for s in range(done, step):
            spent += self.step_cost(self.archs(s))
        self.spent = (step, spent)
        return spent

    def step_cost(self, archs: list) -> int:
        recipe = self.recipe
        return step_flops(archs, self.dims, self.teacher_flops, recipe.seq_len, self.per_step, recipe.blocks_whole,
                          bool(recipe.relation_weight or recipe.hidden_weight),  # else the blocks are not run
                          recipe.sentence_len if recipe.embedding_weight else 0, self.teacher_sentence_flops)

    def build(self):
        """The SuperLM, initialised from the teacher (first-k slices) or from a trained SuperLM's subnet."""
        recipe, teacher = self.recipe, self.teacher
        torch.manual_seed(recipe.seed)
        self.superlm = SuperLM(self.subspace, self.dims, layer_norm_eps=teacher.layer_norm_eps, dropout=recipe.dropout,
                               pad_token_id=teacher.model.config.pad_token_id or 0,
                               distill_width=teacher.shape.hidden if recipe.hidden_weight else None,
                               trains_last_layer=recipe.reaches_last_layer)
        teacher_state = teacher.state_dict()
        if self.rewire_blocks:  # importance-ordered slicing, measured on a seeded sample of the training blocks
            blocks = proxy_sample(self.packed.train, self.rewire_blocks, recipe.seed)
            scores = importance(teacher, blocks.long().to(next(teacher.model.parameters()).device))
            teacher_state = rewired_state(teacher, scores, keep_heads=(recipe.teacher_layer % teacher.shape.layers,),
                                          heads_and_ffn=recipe.rewire, hidden=recipe.order_hidden)
            if recipe.order_hidden:
                self.channel_order = torch.argsort(scores.hidden, descending=True, stable=True)
        if self.student is not None and self.student.init == "superlm":
            self.channel_order = self.student.channel_order
        self.superlm.init_from_teacher(teacher_state, teacher.shape.layers, self.layer_map)
        if self.student is not None and self.student.init == "superlm":
            self.superlm.init_from_subnet(self.student.source, self.student.arch)
        self.identity = _identity(recipe, self.space, self.subspace, teacher.shape, self.per_step, self.packed.fingerprint,
                                  self.superlm.untrained_by_distillation(), self.student)

    def restore(self):
        """With --resume, the latest usable checkpoint's weights and step (its optimizer state goes to the engine)."""
        existing = ckpt.list_checkpoints(self.ckpt_dir)
        if existing and not self.settings.resume:
            raise UserError(f"{self.out_dir}: holds checkpoints of an earlier run; pass --resume to continue it or choose "
                            "another --out")
        if self.settings.resume and existing:
            checkpoint, skipped = ckpt.latest_usable(self.ckpt_dir, warn=lambda m: self.log(f"[yellow]warning:[/] {m}"))
            if checkpoint is None:
                raise UserError(f"{self.ckpt_dir}: no usable checkpoint to resume from: {'; '.join(skipped)}")
            kept = checkpoint.state.get("identity", {})
            differs = [k for k, v in self.identity.items() if kept.get(k, IDENTITY_DEFAULTS.get(k)) != v]
            if differs:
                raise UserError(f"{checkpoint.path}: cannot resume, the run differs in: {', '.join(differs)}")
            self.superlm.load_state_dict(checkpoint.model_state())
            self.checkpoint, self.start_step = checkpoint, checkpoint.step
        # fp32 values of the weights outside the optimizer: under bf16 / fp16 no master copy holds them
        untrained = self.superlm.untrained_by_distillation()
        self.initial = {name: p.detach().clone() for name, p in self.superlm.named_parameters() if name in untrained}
        steps = self.settings.steps
        if steps == 0 or self.start_step >= steps:
            self.superlm.to(device())
        else:
            self.engine = make_engine(self.recipe, self.superlm, self.members, steps)
            if self.checkpoint is not None:
                self.engine.optimizer.load_state_dict(self.checkpoint.optimizer_state())
                self.engine.lr_scheduler.load_state_dict(self.checkpoint.state["scheduler"])
                self.engine.global_steps = self.start_step
                self.engine.global_samples = self.start_step * self.per_step
        if self.is_main:
            self.metrics = [m for m in read_jsonl(self.metrics_file) if m["step"] <= self.start_step]
            write_jsonl(self.metrics_file, self.metrics)  # drop what came after the checkpoint we resume from
        if self.checkpoint is not None:
            self._note_resume()

    def _note_resume(self):
        name, start, steps = self.subspace.name, self.start_step, self.settings.steps
        self.log(f"resuming {name} from {self.checkpoint.path} (step {start})")
        planned = self.checkpoint.state.get("total_steps")
        if planned is not None and planned != steps and start < steps:
            self.log(f"[yellow]warning:[/] {name}: the checkpoint's run was planned for {planned} steps, this one for "
                     f"{steps}; the learning-rate schedule is re-planned from step {start}, so the result will not equal "
                     f"an uninterrupted {steps}-step run")
            self._append_metric({"step": start, "event": "steps_changed", "old_total": planned, "new_total": steps})

    def _append_metric(self, row: dict):
        if self.is_main:
            self.metrics.append(row)
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")

    def save_checkpoint(self, step: int):
        if not self.is_main:
            return
        extra = {
            "identity": self.identity,
            "scheduler": self.engine.lr_scheduler.state_dict() if self.engine else {},
            "rng": {"scheme": "torch/numpy generators seeded by (seed, step)", "seed": self.recipe.seed},
            "samples_seen": step * self.per_step,
            "total_steps": self.settings.steps,  # the learning-rate schedule was planned for this many steps
        }
        model_state, optimizer_state = fp32_state(self.engine, self.superlm, self.initial), self.engine.optimizer.state_dict()
        with reported_write(self.ckpt_dir, f"the checkpoint of step {step}", tensor_bytes([model_state, optimizer_state]),
                            "earlier checkpoints are intact; free space or fix permissions and --resume"):
            ckpt.save_checkpoint(self.ckpt_dir, step, model_state, optimizer_state, extra)
        ckpt.prune(self.ckpt_dir, self.settings.keep_last)

    def loop(self) -> tuple:
        """Optimizer steps from the restored one to `settings.steps`; returns (last step, the stop signal's
        number or None). A stop signal (SIGINT, SIGTERM, SIGUSR1) on any rank stops every rank after the
        same optimizer step, with a checkpoint of it."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        recipe, dev, step = self.recipe, device(), self.start_step
        self.teacher.model.to(dev, dtype=recipe.dtype)  # the teacher runs in the training precision (no grad)
        blocks, n_blocks = self.packed.train, len(self.packed.train)
        if n_blocks == 0:
            raise UserError(f"corpus gives no training block of {recipe.seq_len} tokens; add text or lower --seq-len")
        if self.engine is None:
            return step, None
        self.engine.train()
        spent = self.flops_until(step)
        mine_size = recipe.micro_batch * recipe.accumulation
        progress = Progress(TextColumn(f"[bold]{self.subspace.name}[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.2f} step/s"),
                            TimeRemainingColumn(), console=self.console, disable=not self.is_main)
        tap = RelationTap(self.teacher.model, recipe.teacher_layer, hidden=recipe.blocks_whole)
        order = None if self.channel_order is None else self.channel_order.to(dev)  # moved once, not every step
        embedding = EmbeddingTerm(recipe.embedding_weight, recipe.embedding_loss, self.teacher.pooling,
                                  order) if recipe.embedding_weight else None
        special = self.teacher.tokenizer
        pad_id = self.teacher.model.config.pad_token_id or 0
        with progress, StopRequest() as stop, tap:
            task = progress.add_task("train", total=self.settings.steps, completed=step, loss=float("nan"), rate=0.0)
            while step < self.settings.steps:
                tick = time.perf_counter()
                torch.manual_seed(recipe.seed * 1_000_003 + step)  # dropout masks depend on (seed, step) only
                archs = self.archs(step)
                mine = step_samples(step, self.per_step, n_blocks, recipe.seed)[self.rank * mine_size:][:mine_size]
                micro_batches = [blocks[mine[m * recipe.micro_batch:(m + 1) * recipe.micro_batch]]
                                 for m in range(recipe.accumulation)]
                sentences = [tuple(x.to(dev) for x in block_sentences(b, special.cls_token_id, special.sep_token_id,
                                                                      pad_id, recipe.sentence_len))
                             for b in micro_batches] if embedding else None
                losses = distill_step(self.engine, self.superlm, archs, [b.to(dev) for b in micro_batches],
                                      self.teacher.model, tap, recipe.relation_heads, recipe.hidden_weight, embedding,
                                      sentences, recipe.relation_weight)
                member_losses, hidden_losses, embedding_losses = mean_across_ranks(losses.tolist())  # one host sync
                spent += self.step_cost(archs)
                step += 1
                self.spent = (step, spent)
                elapsed = time.perf_counter() - tick
                row = {"step": step, "loss": sum(member_losses) / self.members, "member_losses": member_losses,
                       "archs": [a.key() for a in archs], "lr": self.engine.get_lr()[0],
                       "tokens_per_s": self.per_step * recipe.seq_len / elapsed, "train_flops": spent}
                if recipe.hidden_weight:  # "loss" stays the relation KL, the quantity the search's proxy measures
                    row["hidden_loss"] = sum(hidden_losses) / self.members
                if recipe.embedding_weight:
                    row["embedding_loss"] = sum(embedding_losses) / self.members
                self._append_metric(row)
                progress.update(task, completed=step, loss=row["loss"], rate=1.0 / elapsed)
                stop_now = mean_across_ranks([float(stop.requested)])[0] > 0
                if step % self.settings.save_every == 0 or step == self.settings.steps or stop_now:
                    self.save_checkpoint(step)
                if stop_now:  # a rank that was not signalled itself stops as if asked by SIGTERM
                    return step, int(stop.signum or signal.SIGTERM)
                maybe_die("train-step", step)
        return step, None

    def save(self, step: int, teacher_spec: str):
        """The trained SuperLM (fp32 masters) and its loss curve."""
        if self.engine is not None and self.recipe.precision != "fp32":  # ship the fp32 masters, not the rounded copies
            masters = fp32_state(self.engine, self.superlm, self.initial)  # before the cast: it tells rounded copies by dtype
            self.superlm.float().load_state_dict(masters)
        if self.is_main:
            meta = superlm_meta(self.recipe, self.space, self.subspace, self.teacher, step, teacher_spec,
                                self.packed.record(), self.flops_until(step), self.student, self.channel_order,
                                self.layer_map)
            with reported_write(self.out_dir, "the trained SuperLM", tensor_bytes(self.superlm.student_state()),
                                "its last checkpoint is intact; free space or fix permissions and --resume"):
                save_superlm(self.out_dir, self.superlm, meta)
            if self.metrics:
                _plot_losses(self.metrics, self.out_dir / "loss.png", f"SuperLM '{self.subspace.name}' of {self.space.name}")


def train_subspace(recipe: Recipe, space: SearchSpace, subspace: SubSpace, teacher: Teacher, packed: PackedCorpus,
                   out_dir: Path, settings: TrainSettings, teacher_spec: str, console,
                   student: StudentStart | None = None) -> dict:
    """Train (or resume) one SuperLM into `out_dir`; returns a summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = SubspaceTraining(recipe, space, subspace, teacher, packed, out_dir, settings, console, student)
    run.build()
    run.restore()
    step, stop_signal = run.loop()
    if stop_signal is not None:
        return {"subspace": subspace.name, "step": step, "interrupted": True, "signal": stop_signal,
                "checkpoint": str(ckpt.checkpoint_path(run.ckpt_dir, step))}
    run.save(step, teacher_spec)
    return {
        "subspace": subspace.name,
        "step": step,
        "interrupted": False,
        "final_loss": next((m["loss"] for m in reversed(run.metrics) if "loss" in m), None),
        "train_flops": run.flops_until(step),
        "resumed_from": str(run.checkpoint.path) if run.checkpoint else None,
    }


def plan(recipe: Recipe, space: SearchSpace, subspaces: list, steps: int, world_size: int,
         student: Arch | None = None) -> dict:
    """What a run would do, from the recipe alone (no weights, no data): for --dry-run. FLOPs as the run
    counts them (`step_flops`); a sandwich's random members at their mean, so an estimate there."""
    teacher = recipe.teacher_shape()
    space.validate_against(teacher)
    members = {sub.name: sandwich_size(sub, recipe.sandwich_random, student) for sub in subspaces}
    engine_config = recipe.engine_config(max(members.values()), steps)
    dims = space.dims(teacher)
    global_batch = recipe.micro_batch * recipe.accumulation * world_size
    whole = recipe.blocks_whole
    on_blocks = bool(recipe.relation_weight or recipe.hidden_weight)  # else the embedding term alone
    teacher_flops = teacher_tap_flops(teacher, recipe.teacher_layer, recipe.seq_len, whole) if on_blocks else 0
    passes = 3 if on_blocks else 0
    sentence_len = recipe.sentence_len if recipe.embedding_weight else 0
    if sentence_len:
        teacher_flops += count_flops(teacher.arch(), teacher.dims(), sentence_len)
    per_subspace = []
    for sub in subspaces:
        alone = alone_arch(sub, student)

        def member(seq_len, stop, n_random=recipe.sandwich_random, sub=sub, alone=alone):
            # forward + backward ~ 3x forward for each sandwich member; the teacher only runs forward
            if alone is not None:
                return count_flops(alone, dims, seq_len, stop)
            return (count_flops(sub.largest(), dims, seq_len, stop) + count_flops(sub.smallest(), dims, seq_len, stop)
                    + n_random * mean_flops(sub, dims, seq_len, stop))

        member_flops = passes * member(recipe.seq_len, not whole) + (3 * member(sentence_len, False) if sentence_len else 0)
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


def run_training(recipe: Recipe, space: SearchSpace, subspace_name: str, run_dir, teacher_spec, settings: TrainSettings, console,
                 student: StudentStart | None = None):
    """`autodistil-evo train`: each selected sub-space's SuperLM in turn, into RUN_DIR/<subspace>/; with
    `student` (`train-student`), that one arch alone in the space's one sub-space."""
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
    if student is not None and replace(teacher.shape, name="") != replace(student.teacher_shape, name=""):
        raise UserError(f"{teacher.source}: teacher's shape differs from the one the student's SuperLM was distilled from "
                        f"({student.teacher_shape.name}); pass that teacher with --teacher")
    packed = build_corpus(recipe.corpus, teacher.tokenizer, recipe.seq_len, recipe.heldout_fraction,
                          progress=corpus_progress(console) if rank == 0 else None,
                          warn=lambda m: console.print(f"[yellow]warning:[/] {m}"))
    run_dir = prepare_output_dir(run_dir, "run directory")
    results = []
    lock = directory_lock(run_dir, warn=console.print) if rank == 0 else nullcontext()
    with lock:
        for sub in subspaces:
            result = train_subspace(recipe, space, sub, teacher, packed, run_dir / sub.name, settings, teacher_spec, console,
                                    student)
            results.append(result)
            if result["interrupted"]:
                break
        if rank == 0:
            write_json(run_dir / "run.json", {"recipe": recipe.to_dict(), "space_file": space.source, "teacher": teacher_spec})
    return results

