"""Proxy evaluation of archs: relation-distillation loss of the subnet vs. the teacher on held-out text.

The teacher's relations on the fixed held-out blocks are computed once; each arch's result is
cached by its key, so a duplicate costs nothing. Under a multi-process launch, the archs not yet
cached are split across ranks and the results gathered (as tensors, not pickles).
"""

import torch

from autodistil_evo.distill.loss import relation_loss_from_teacher, teacher_relations
from autodistil_evo.distributed import device
from autodistil_evo.faults import maybe_die
from autodistil_evo.search.fidelity import embed, encoder_forward, fidelity
from autodistil_evo.spaces import Arch
from autodistil_evo.supernet import SuperLM
from autodistil_evo.supernet.latency import latency as latency_of
from autodistil_evo.teacher import RelationTap


class ProxyEvaluator:
    def __init__(self, superlm: SuperLM, teacher_model, heldout: torch.Tensor, relation_heads: int,
                 teacher_layer: int = -1, batch_size: int = 32, measure_latency_too: bool = False, cache=None,
                 latency_runtime: str = "torch", latency_repeats: int = 5, dtype=torch.float32, latency_device: str = "cpu",
                 fidelity_set: tuple | None = None):
        """`fidelity_set`: (texts, tokenizer, pooling) to also measure each subnet's embedding fidelity to the
        teacher on those texts (`search.fidelity`); None: not measured."""
        self.superlm = superlm.eval().to(device(), dtype=dtype)
        self.relation_heads = relation_heads
        self.measure_latency_too = measure_latency_too
        self.latency_runtime, self.latency_repeats, self.latency_device = latency_runtime, latency_repeats, latency_device
        self.cache = cache if cache is not None else {}  # arch key -> {"loss", "latency_ms"[, "fidelity", "fidelity_loss"]}
        self.hits = 0
        self.batches = []
        teacher_model.to(device(), dtype=dtype)
        with torch.inference_mode(), RelationTap(teacher_model, teacher_layer) as tap:
            for start in range(0, len(heldout), batch_size):
                ids = heldout[start : start + batch_size].to(device())
                mask = torch.ones_like(ids)
                relations = teacher_relations(tap(teacher_model, ids, mask), relation_heads, mask)
                self.batches.append((ids, mask, relations))
        self.tokens = sum(ids.numel() for ids, _, _ in self.batches)
        self.fidelity_set, self.reference = fidelity_set, None
        if fidelity_set is not None:
            texts, tokenizer, pooling = fidelity_set
            self.reference = embed(encoder_forward(teacher_model), tokenizer, texts, pooling, max_len=self.max_len(teacher_model),
                                   device=device())

    @staticmethod
    def max_len(model) -> int:
        return min(128, getattr(model.config, "max_position_embeddings", 512) - 2)

    @torch.inference_mode()
    def fidelity(self, arch: Arch) -> float:
        """Spearman of the subnet's cosine similarities against the teacher's on the fidelity texts."""
        texts, tokenizer, pooling = self.fidelity_set
        self.superlm.set_active(arch)
        vectors = embed(lambda ids, mask: self.superlm(ids, mask)[0], tokenizer, texts, pooling,
                        max_len=min(128, self.superlm.dims.max_position_embeddings - 2), device=device())
        return fidelity(vectors, self.reference)["spearman"]

    @torch.inference_mode()
    def proxy_loss(self, arch: Arch) -> float:
        self.superlm.set_active(arch)
        total = 0.0
        for ids, mask, relations in self.batches:
            _, _, qkv = self.superlm(ids, mask, stop_at_last_qkv=True)
            loss = relation_loss_from_teacher(relations, qkv, mask, self.relation_heads)
            total += loss.item() * ids.numel()
        return total / self.tokens

    def _evaluate_one(self, arch: Arch) -> list:
        loss = self.proxy_loss(arch)
        latency, spearman = float("nan"), float("nan")
        if self.fidelity_set is not None:
            spearman = self.fidelity(arch)
        if self.measure_latency_too:
            seq = self.batches[0][0].shape[1]
            student = self.superlm.extract(arch)
            latency = latency_of(student, self.latency_runtime, self.latency_device, batch=1, seq_len=seq,
                                 repeats=self.latency_repeats, vocab=student.config.vocab_size)["latency_ms"]
        return [loss, latency, spearman]

    def evaluate_many(self, archs: list, count_hits: bool = True) -> list:
        """Results for `archs` in order; uncached ones are computed (split over ranks) and cached."""
        import torch.distributed as dist

        todo = list(dict.fromkeys(a for a in archs if a.key() not in self.cache))
        if count_hits:
            self.hits += len(archs) - len(todo)
        world = dist.get_world_size() if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        mine = todo[rank::world]
        values = []
        for arch in mine:
            values.append(self._evaluate_one(arch))
            maybe_die("search-eval", len(self.cache) + len(values))
        if world > 1:
            per_rank = -(-len(todo) // world)
            where = device() if dist.get_backend() == "nccl" else "cpu"
            local = torch.full((per_rank, 3), float("nan"), dtype=torch.float64, device=where)
            if values:
                local[: len(values)] = torch.tensor(values, dtype=torch.float64)
            gathered = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(gathered, local)
            values = [gathered[i % world][i // world].tolist() for i in range(len(todo))]  # rank i%world did todo[i]
        for arch, (loss, latency, spearman) in zip(todo, values):
            entry = {"loss": loss, "latency_ms": None if latency != latency else latency}
            if spearman == spearman:  # measured (not NaN)
                entry.update(fidelity=spearman, fidelity_loss=1.0 - spearman)
            self.cache[arch.key()] = entry
        return [self.cache[a.key()] for a in archs]
