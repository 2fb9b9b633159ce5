"""Process-group set-up for one process (no launcher) or many (torchrun / deepspeed launcher)."""

import logging
import os
import tempfile

import torch


def init_distributed(verbose: bool = False):
    """Initialise torch.distributed through DeepSpeed once per process; returns (rank, world_size).

    Without a launcher this becomes a world of one that meets through a private file, not a TCP
    port (a port found free can be taken by another process before it is bound). On a machine
    without CUDA, DeepSpeed's CPU accelerator and the gloo backend are used.
    """
    cuda = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    single = {}
    if "MASTER_ADDR" not in os.environ:  # every launcher (torchrun, deepspeed, mpirun wrappers) sets it
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        store = os.path.join(tempfile.mkdtemp(prefix="autodistil-evo-pg-"), "store")
        single = {"init_method": "file://" + store, "rank": 0, "world_size": 1}
    import deepspeed
    import torch.distributed as dist

    if not verbose:  # DeepSpeed warns on CPU-only machines and before the first scheduler step
        deepspeed.utils.logger.setLevel(logging.ERROR)
    # The shared-memory comm op would be compiled (~30 s) and is unused with gloo.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not dist.is_initialized():
        deepspeed.init_distributed(
            dist_backend="nccl" if cuda else "gloo", verbose=False, auto_mpi_discovery=False, **single
        )
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_ranks(values: list) -> list:
    import torch.distributed as dist

    if not dist.is_initialized():  # a search run without a launcher: one process, nothing to average
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device() if dist.get_backend() == "nccl" else "cpu")
    if dist.get_world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor.tolist()
