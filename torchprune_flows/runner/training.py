"""One (re)training run: optimizer, per-iteration LR schedule, early stopping, epoch checkpoints.

A run covers epochs ``[start_epoch, num_epochs)`` of a schedule. The LR schedulers are built
fresh and advanced to ``start_epoch`` (learning-rate rewinding for retraining), stepped every
iteration with their ``stepKwargs`` given in epochs. Shuffling and Hutchinson probes are seeded
per epoch, so a run resumed from its last epoch checkpoint continues with the same numbers.
"""
import math
import os
import time
import warnings

import torch
from tqdm import tqdm

from torchprune_flows.cnf import SolverError, backward, cnf_blocks, nfe_counts, with_divergence
from torchprune_flows.pruning import export_state, import_state

from .atomic_files import load_checkpoint, save_checkpoint
from .distributed import (agree_on_failure, average_gradients, global_mean, is_writer, mean_over_ranks,
                          rank_and_size, run_once, shard)


class DidNotConverge(RuntimeError):
    """A non-finite loss or a solver failure."""


def make_optimizer(net, name, kwargs):
    return getattr(torch.optim, name)([p for p in net.parameters() if p.requires_grad], **kwargs)


def _scale_step_kwargs(step_kwargs, iters_per_epoch):
    """Epoch counts -> iteration counts (numbers and lists of numbers)."""
    def scale(v):
        if isinstance(v, (list, tuple)):
            return [scale(x) for x in v]
        return int(round(v * iters_per_epoch)) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    return {k: scale(v) for k, v in step_kwargs.items()}


def make_schedulers(optimizer, specs, iters_per_epoch, start_epoch=0):
    """Schedulers stepped per iteration, advanced to ``start_epoch``."""
    schedulers = [
        getattr(torch.optim.lr_scheduler, spec["type"])(
            optimizer, **spec.get("kwargs", {}), **_scale_step_kwargs(spec.get("stepKwargs", {}), iters_per_epoch))
        for spec in specs
    ]
    with warnings.catch_warnings():  # stepping before optimizer.step() is the point here
        warnings.simplefilter("ignore")
        for _ in range(start_epoch * iters_per_epoch):
            for scheduler in schedulers:
                scheduler.step()
    return schedulers


def current_lr(optimizer):
    return optimizer.param_groups[0]["lr"]


def _batches(loader, device):
    for x, y in loader:
        yield x.to(device), y.to(device)


#: Flows over at most this many dimensions are evaluated with the exact divergence: D
#: vector-Jacobian products per evaluation instead of one probe's, and no probe noise (on a
#: 2,000-point toy test set one probe per batch gave 4.186 +- 0.079 nats over 40 seeds, the
#: exact value 4.173). Toy flows (2) and POWER (6), GAS (8); wider flows keep one Gaussian probe
#: per batch, whose noise is part of the reported standard error.
EXACT_EVALUATION_MAX_DIM = 10


def evaluation_estimator(net):
    """``(divergence to evaluate with or None, its description)`` for ``net``."""
    blocks = cnf_blocks(net)
    kinds = {b.odefunc.divergence for b in blocks}
    if not blocks or kinds == {"none"}:
        return None, "no log-density (classifier)"
    dim = int(torch.Size(getattr(net, "data_shape", ())).numel()) if hasattr(net, "data_shape") else None
    if kinds == {"exact"}:
        return None, "exact divergence"
    if dim is not None and dim <= EXACT_EVALUATION_MAX_DIM:
        return "exact", "exact divergence"
    return None, "Hutchinson, one Gaussian probe per batch"


@torch.no_grad()
def evaluate(net, loader, loss_fn, metrics, device, seed=0):
    """Mean loss (and its standard error over the samples), both metrics and forward NFE per
    batch over a loader, with the estimator :func:`evaluation_estimator` picks (probes seeded)."""
    net.eval()
    torch.manual_seed(seed)
    divergence, estimator = evaluation_estimator(net)
    totals = {"loss": 0.0, "metric": 0.0, "metric2": 0.0, "nfe_forward": 0.0}
    per_sample = []
    count = batches = 0
    try:
        with with_divergence(net, divergence):
            for x, y in _batches(loader, device):
                out = net(x)
                n = x.shape[0]
                totals["loss"] += float(loss_fn(out, y)) * n
                if hasattr(loss_fn, "per_sample"):
                    per_sample.append(loss_fn.per_sample(out).double().cpu())
                totals["metric"] += metrics[0](out, y) * n
                totals["metric2"] += metrics[1](out, y) * n
                totals["nfe_forward"] += nfe_counts(net)["forward"]
                count += n
                batches += 1
    except SolverError:
        return {"loss": math.nan, "loss_se": math.nan, "metric": math.nan, "metric2": math.nan,
                "nfe_forward": math.nan, "estimator": estimator}
    result = {k: v / count for k, v in totals.items() if k != "nfe_forward"}
    result["nfe_forward"] = totals["nfe_forward"] / batches
    values = torch.cat(per_sample) if per_sample else torch.zeros(0)
    result["loss_se"] = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan
    result["estimator"] = estimator
    return result


def train(net, loaders, tcfg, loss_fn, metrics, device, start_epoch, seed, checkpoint_path,
          desc="train", log=None):
    """Train ``net`` in place over epochs ``[start_epoch, tcfg["numEpochs"])``.

    ``loaders``: dict with "train" and "val" data loaders (the train loader's sampler must be
    seeded through its ``generator``). Returns a summary dict (epochs, seconds, lr_start, final
    and per-epoch NFE). Raises :class:`DidNotConverge` on a non-finite loss or solver failure.
    ``checkpoint_path`` holds the run's state after every epoch and is resumed from if present;
    ``log(history)`` receives the per-epoch records of the whole run after every epoch. A record
    holds ``epoch``, ``lr``, ``train_loss``, ``nfe_forward`` / ``nfe_backward`` (means per training
    batch), ``batches`` and ``seconds`` (wall time of the epoch's training batches, validation
    excluded), and ``val_loss`` / ``val_metric`` once validation starts.
    """
    num_epochs = tcfg["numEpochs"]
    iters = len(loaders["train"])
    saved = load_checkpoint(checkpoint_path) if checkpoint_path and os.path.exists(checkpoint_path) else None
    epoch = saved["epoch"] if saved else start_epoch
    optimizer = make_optimizer(net, tcfg["optimizer"], tcfg["optimizerKwargs"])
    schedulers = make_schedulers(optimizer, tcfg["lrSchedulers"], iters, epoch)
    early_stop = tcfg["earlyStopEpoch"]
    summary = {"epochs": 0, "seconds": 0.0, "lr_start": current_lr(optimizer), "history": [],
               "best_epoch": None, "best_metric": -math.inf, "best_state": None}
    if saved:  # resume: weights, optimizer moments and the schedule's learning rate as they were
        import_state(net, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        summary.update(saved["summary"])

    bar = tqdm(range(epoch, num_epochs), desc=desc, leave=False, dynamic_ncols=True, position=1,
               initial=epoch - start_epoch, total=num_epochs - start_epoch)
    for epoch in bar:
        started = time.time()
        record = _train_epoch(net, loaders["train"], optimizer, schedulers, loss_fn, device,
                              seed * 100003 + epoch, bar)
        record["seconds"] = time.time() - started  # the epoch's training batches, without validation
        record["epoch"] = epoch
        if epoch >= early_stop and loaders.get("val") is not None:
            val = run_once(evaluate, net, loaders["val"], loss_fn, metrics, device, seed)  # rank 0's, broadcast
            record["val_loss"], record["val_metric"] = val["loss"], val["metric"]
            if val["metric"] > summary["best_metric"]:
                summary.update(best_epoch=epoch, best_metric=val["metric"], best_state=export_state(net))
        summary["history"].append(record)
        summary["epochs"] += 1
        summary["seconds"] += time.time() - started
        if checkpoint_path is not None and is_writer():
            save_checkpoint({"epoch": epoch + 1, "model": export_state(net), "optimizer": optimizer.state_dict(),
                             "summary": summary}, checkpoint_path)
        if log is not None and is_writer():  # after the checkpoint: the log never runs ahead of a resume
            log(summary["history"])
    bar.close()
    if summary["best_state"] is not None:
        import_state(net, summary["best_state"])
    summary.pop("best_state")
    return summary


def _train_epoch(net, loader, optimizer, schedulers, loss_fn, device, epoch_seed, bar):
    """One epoch; under torchrun each rank trains on its shard of every global batch (same
    order everywhere), its own probes, and averaged gradients (:mod:`.distributed`)."""
    net.train()
    rank, size = rank_and_size()
    torch.manual_seed(epoch_seed if size == 1 else epoch_seed + 7919 * rank)  # per-rank probes
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(epoch_seed)
    totals = {"train_loss": 0.0, "nfe_forward": 0.0, "nfe_backward": 0.0}
    lr = current_lr(optimizer)
    batches = 0
    for x, y in _batches(loader, device):
        x, y = shard(x, y)
        optimizer.zero_grad(set_to_none=True)
        failure = None
        try:
            out = net(x)
            loss = loss_fn(out, y)
            if not torch.isfinite(loss):
                failure = f"non-finite training loss {loss.item()}"
            else:
                backward(loss)  # a failed adjoint solve is a SolverError too
                if not all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None):
                    failure = "non-finite gradients in the backward pass"
        except SolverError as err:
            failure = str(err)
        failure = agree_on_failure(failure)
        if failure:
            raise DidNotConverge(failure)
        average_gradients(list(net.parameters()), len(x))
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        nfe = nfe_counts(net)
        totals["train_loss"] += global_mean(loss.item(), len(x))
        totals["nfe_forward"] += mean_over_ranks(nfe["forward"])
        totals["nfe_backward"] += mean_over_ranks(nfe["backward"])
        batches += 1
        bar.set_postfix(loss=f"{loss.item():.3f}", nfe_f=nfe["forward"], nfe_b=nfe["backward"], refresh=False)
    record = {k: v / max(batches, 1) for k, v in totals.items()}
    record["lr"] = lr
    record["batches"] = batches
    return record
