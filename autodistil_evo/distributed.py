"""Process-group set-up for one process (no launcher) or many (torchrun / deepspeed launcher)."""

import logging
import os
import socket

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(verbose: bool = False):
    """Initialise torch.distributed through DeepSpeed once per process; returns (rank, world_size).

    Without a launcher this becomes a world of one on a free local port. On a machine without
    CUDA, DeepSpeed's CPU accelerator and the gloo backend are used.
    """
    cuda = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
    import deepspeed
    import torch.distributed as dist

    if not verbose:  # DeepSpeed warns on CPU-only machines and before the first scheduler step
        deepspeed.utils.logger.setLevel(logging.ERROR)
    # The shared-memory comm op would be compiled (~30 s) and is unused with gloo.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_ranks(values: list) -> list:
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device() if dist.get_backend() == "nccl" else "cpu")
    if dist.get_world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor.tolist()
