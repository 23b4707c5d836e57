"""Data-parallel training of one flow: ``torchrun --nproc_per_node=K -m experiment CONFIG``.

Under torchrun (``WORLD_SIZE`` > 1) the runner joins a process group (NCCL on GPUs, Gloo on
CPU). Each global batch of ``batchSize`` rows, in the same seeded order on every rank, is split
into K contiguous shards; each rank computes its shard's loss with its own Hutchinson probes
(seeded from the step seed and the rank), and the gradients are averaged weighted by shard size,
so every rank takes the same optimizer step as one process on the whole batch. NFE are counted
per rank and reported as the mean. Pruning and evaluation run once, on rank 0, and are broadcast
(:func:`run_once`): the other ranks take rank 0's pruned weights and masks (:func:`prune_once`)
and its evaluation numbers, so every rank holds the same network and takes the same decisions
(best epoch, converged or not) even for a pruning method that draws random numbers. Only rank 0
writes files.
"""
import os
import pickle

import torch
import torch.distributed as dist

from torchprune_flows.pruning import export_state, import_state, prune


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
    """The mean over the ranks of a per-rank number (each rank weighted equally)."""
    return global_mean(value, 1)


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


class RankZeroError(RuntimeError):
    """What rank 0 raised in :func:`run_once`, on the other ranks (when it cannot be pickled)."""


def run_once(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0 only; every rank returns rank 0's result (broadcast as a
    pickle). An exception on rank 0 is raised on every rank, so the ranks stop together."""
    rank, size = rank_and_size()
    if size == 1:
        return fn(*args, **kwargs)
    box, error = [None], None
    if rank == 0:
        try:
            box[0] = ("result", fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001  (sent to the other ranks, then raised here too)
            error = err
            try:
                pickle.dumps(err)
                box[0] = ("error", err)
            except Exception:  # noqa: BLE001
                box[0] = ("error", RankZeroError(f"{type(err).__name__}: {err}"))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise error if error is not None else value
    return value


def prune_once(net, method, keep_ratio, params_original, over="all_parameters"):
    """Prune ``net`` in place on rank 0 (:func:`torchprune_flows.pruning.prune`); every other rank
    loads rank 0's pruned weights and masks into its ``net``. Returns the pruned state
    (:func:`torchprune_flows.pruning.export_state`), the same on every rank."""

    def prune_here():
        prune(net, method, keep_ratio, params_original, over)
        return export_state(net)

    state = run_once(prune_here)
    if rank_and_size()[0] != 0:
        import_state(net, state)
    return state
