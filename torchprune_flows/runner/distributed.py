"""Data-parallel training of one flow: ``torchrun --nproc_per_node=K -m experiment CONFIG``.

Under torchrun (``WORLD_SIZE`` > 1) the runner joins a process group (NCCL on GPUs, Gloo on
CPU). Each global batch of ``batchSize`` rows, in the same seeded order on every rank, is split
into K contiguous shards; each rank computes its shard's loss with its own Hutchinson probes
(seeded from the step seed and the rank), and the gradients are averaged weighted by shard size,
so every rank takes the same optimizer step as one process on the whole batch. NFE are counted
per rank and reported as the mean. Pruning and evaluation are deterministic and run identically
on every rank (the ranks hold identical weights and masks); only rank 0 writes files.
"""
import os

import torch
import torch.distributed as dist


def init_from_environment(device="cpu"):
    """Join the process group torchrun describes; True when running with several ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    return True


def rank_and_size():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_writer():
    """Whether this process writes the run folder's files (rank 0, or a single process)."""
    return rank_and_size()[0] == 0


def shard(x, y):
    """This rank's contiguous part of a global batch (all of it in a single process)."""
    rank, size = rank_and_size()
    if size == 1:
        return x, y
    return torch.tensor_split(x, size)[rank], torch.tensor_split(y, size)[rank]


def average_gradients(params, local_count):
    """Gradients of the global batch's mean loss from each rank's shard mean (weighted by size)."""
    rank, size = rank_and_size()
    if size == 1:
        return
    total = torch.tensor([float(local_count)])
    dist.all_reduce(total)
    for param in params:
        if param.grad is not None:
            param.grad.mul_(local_count / total.item())
            dist.all_reduce(param.grad)


def global_mean(value, local_count):
    """The mean over every rank's rows of a per-rank mean ``value`` (a float)."""
    rank, size = rank_and_size()
    if size == 1:
        return value
    buffer = torch.tensor([value * local_count, float(local_count)], dtype=torch.float64)
    dist.all_reduce(buffer)
    return float(buffer[0] / buffer[1])


def mean_over_ranks(value):
    rank, size = rank_and_size()
    if size == 1:
        return value
    buffer = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(buffer)
    return float(buffer[0] / size)


def agree_on_failure(failure):
    """Every rank learns whether any rank failed (a message, or None): they stop together."""
    rank, size = rank_and_size()
    if size == 1:
        return failure
    flag = torch.tensor([1.0 if failure else 0.0])
    dist.all_reduce(flag)
    if flag.item() > 0:
        return failure or "diverged on another rank"
    return None
