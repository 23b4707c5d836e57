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

Collectives run on the backend's device: NCCL reduces CUDA tensors only, so under NCCL each rank
uses the GPU of its ``LOCAL_RANK`` (:func:`init_from_environment` makes it the current device)
and every tensor handed to a collective lives there; Gloo's live on the CPU (gradients on the
parameters' own device). Pruned states travel from rank 0 on the CPU and are moved to each
rank's network (:func:`prune_once`).
"""
import os
import pickle

import torch
import torch.distributed as dist

from torchprune_flows.errors import UserError
from torchprune_flows.pruning import export_state, import_state, prune


class DistributedSetupError(UserError, RuntimeError):
    """torchrun's processes cannot each have a GPU of their own (NCCL needs one per process)."""


def init_from_environment(device="cpu"):
    """Join the process group torchrun describes; True when running with several ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if str(device).startswith("cuda"):  # one GPU per rank: "cuda" then means this rank's GPU
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:
                raise DistributedSetupError(
                    f"torchrun started local rank {local_rank} with --device cuda, but this machine has "
                    f"{gpus} GPU(s) and NCCL needs one per process: use --nproc_per_node={gpus} or fewer"
                    if gpus else "--device cuda was given but no CUDA device is available; use --device cpu")
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    return True


def leave_process_group():
    """Every rank waits for the others, then the group is torn down: a rank that exits while a
    peer still holds its Gloo connections can take that peer down with SIGABRT."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_and_size():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def collective_device():
    """Where this rank's collective tensors live: its current GPU under NCCL, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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
    """Gradients of the global batch's mean loss from each rank's shard mean (weighted by size).

    Each rank sends ``local_count * grad`` and ``local_count`` in one flat buffer per (device,
    dtype), so one all-reduce gives the sum of both over the ranks (shard sizes may differ by one).
    """
    rank, size = rank_and_size()
    if size == 1:
        return
    # not DDP: it reduces inside backward, before a rank's failed solve can reach agree_on_failure (README, GPUs)
    groups = {}
    for param in params:
        if param.grad is not None:
            groups.setdefault((param.grad.device, param.grad.dtype), []).append(param.grad)
    for (device, dtype), grads in groups.items():
        count = torch.tensor([float(local_count)], dtype=dtype, device=device)
        flat = torch.cat([grad.reshape(-1) * local_count for grad in grads] + [count])
        dist.all_reduce(flat)
        flat = flat[:-1] / flat[-1]
        for grad, summed in zip(grads, torch.split(flat, [grad.numel() for grad in grads])):
            grad.copy_(summed.view_as(grad))


def global_mean(value, local_count):
    """The mean over every rank's rows of a per-rank mean ``value`` (a float)."""
    rank, size = rank_and_size()
    if size == 1:
        return value
    buffer = torch.tensor([value * local_count, float(local_count)], dtype=torch.float64,
                          device=collective_device())
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
    flag = torch.tensor([1.0 if failure else 0.0], device=collective_device())
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
    (:func:`torchprune_flows.pruning.export_state`), the same on every rank, on ``net``'s device."""

    def prune_here():
        prune(net, method, keep_ratio, params_original, over)
        return _state_on(export_state(net), "cpu")  # not rank 0's GPU: the others unpickle it

    device = next(net.parameters()).device
    state = _state_on(run_once(prune_here), device)
    if rank_and_size()[0] != 0:
        import_state(net, state)
    return state


def _state_on(state, device):
    """An exported state (:func:`torchprune_flows.pruning.export_state`) with its tensors on ``device``."""
    return {part: {key: tensor.to(device) for key, tensor in tensors.items()} for part, tensors in state.items()}
