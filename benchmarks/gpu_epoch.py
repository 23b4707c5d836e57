"""Time the first training iterations of a config's base net and extrapolate its epoch.

    python benchmarks/gpu_epoch.py CONFIG [--set KEY=VALUE ...] [--device cuda] [--budget-s 60]
        [--max-iterations N] [--full-train-rows N] [--eval-batches K] [--json FILE]

The config is resolved as the runner resolves it (includes, ``--set`` overrides, defaults), the
net built and seeded as the runner builds its base net, and the iterations run through the
runner's own training epoch (``runner.training._train_epoch``: shard, loss, adjoint backward,
optimizer and LR-scheduler steps), cut after ``--max-iterations`` or once ``--budget-s`` seconds
have passed. Each iteration ends with ``loss.item()``, so its wall time includes the GPU's work.
The epoch is extrapolated as the first iteration (warm-up included) plus the median of the
others times the remaining iterations, for the data on disk and, with ``--full-train-rows``
(e.g. 54,000 for MNIST's real training split), for the full dataset. Then ``--eval-batches``
test batches are timed through the runner's evaluation. One JSON line goes to stdout (and
``--json``). A benchmark, not a test: it asserts nothing beyond finite losses.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch


class _Capped:
    """The first batches of ``loader``, until ``count`` batches or ``seconds`` have passed."""

    def __init__(self, loader, count, seconds):
        self.loader, self.count, self.seconds = loader, count, seconds
        self.generator = getattr(loader, "generator", None)  # the training loop reseeds it

    def __iter__(self):
        started = time.perf_counter()
        for i, batch in enumerate(self.loader):
            if i >= self.count or time.perf_counter() - started > self.seconds:
                return
            yield batch


class _IterationClock:
    """Stands in for the progress bar: ``set_postfix`` is called once at the end of each iteration."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds, self.nfe_forward, self.nfe_backward, self.losses = [], [], [], []

    def set_postfix(self, loss, nfe_f, nfe_b, **_):
        now = time.perf_counter()
        self.seconds.append(now - self.start)
        self.start = now
        self.losses.append(float(loss))
        self.nfe_forward.append(nfe_f)
        self.nfe_backward.append(nfe_b)


def _extrapolate(first, median, iterations):
    return first + median * max(iterations - 1, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=60.0, help="stop starting iterations after this")
    parser.add_argument("--max-iterations", type=int, default=50)
    parser.add_argument("--full-train-rows", type=int, help="training rows of the full dataset, to extrapolate to")
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--json", help="also write the JSON line to this file (appended)")
    args = parser.parse_args(argv)

    from torchprune_flows.registry import load_entry_point_plugins, load_plugins
    from torchprune_flows.runner.config import resolve_config
    from torchprune_flows.runner.data import build_loaders
    from torchprune_flows.runner.pipeline import Experiment
    from torchprune_flows.runner.training import _train_epoch, evaluate, make_optimizer, make_schedulers

    resolved = resolve_config(args.config, args.overrides)
    load_plugins(list(resolved.cfg.get("plugins", [])))
    load_entry_point_plugins()
    experiment = Experiment(resolved.runs[0], "/nonexistent-not-written", args.device)
    cfg, tcfg = experiment.cfg, experiment.training
    started = time.perf_counter()
    splits = experiment.splits
    data_seconds = time.perf_counter() - started
    torch.manual_seed(cfg["seed"])
    net = experiment.build_network()
    loaders = build_loaders(splits, tcfg, cfg["seed"])
    iterations_per_epoch = len(loaders["train"])
    optimizer = make_optimizer(net, tcfg["optimizer"], tcfg["optimizerKwargs"])
    schedulers = make_schedulers(optimizer, tcfg["lrSchedulers"], iterations_per_epoch)
    if experiment.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(experiment.device)
    clock = _IterationClock()
    _train_epoch(net, _Capped(loaders["train"], args.max_iterations, args.budget_s), optimizer, schedulers,
                 experiment.loss_fn, experiment.device, cfg["seed"], clock)
    seconds = clock.seconds
    first = seconds[0] if seconds else math.nan
    median = statistics.median(seconds[1:]) if len(seconds) > 1 else first
    started = time.perf_counter()
    evaluation = evaluate(net, _Capped(loaders["test"], args.eval_batches, math.inf), experiment.loss_fn,
                          experiment.metrics, experiment.device, cfg["seed"])
    eval_seconds = time.perf_counter() - started
    eval_batches = min(args.eval_batches, len(loaders["test"]))
    batch = tcfg["batchSize"]
    report = {
        "config": args.config, "overrides": args.overrides, "device": str(experiment.device),
        "device_name": torch.cuda.get_device_name(experiment.device) if experiment.device.type == "cuda" else "cpu",
        "network": cfg["network"]["name"], "parameters": sum(p.numel() for p in net.parameters()),
        "batch_size": batch, "train_rows": len(splits["train"]), "data_seconds": round(data_seconds, 2),
        "iterations_per_epoch": iterations_per_epoch, "iterations_timed": len(seconds),
        "first_iteration_s": round(first, 3), "median_iteration_s": round(median, 4),
        "iteration_s": [round(s, 4) for s in seconds],
        "nfe_forward": clock.nfe_forward, "nfe_backward": clock.nfe_backward,
        "losses": [round(v, 4) for v in clock.losses],
        "epoch_s_extrapolated": round(_extrapolate(first, median, iterations_per_epoch), 1),
        "eval_batches": eval_batches, "eval_batch_s": round(eval_seconds / max(eval_batches, 1), 3),
        "eval_loss": evaluation["loss"], "eval_nfe_forward": evaluation["nfe_forward"],
    }
    if args.full_train_rows:
        full = math.ceil(args.full_train_rows / batch)
        report.update(full_train_rows=args.full_train_rows, full_iterations_per_epoch=full,
                      full_epoch_s_extrapolated=round(_extrapolate(first, median, full), 1))
    if experiment.device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(experiment.device) / 2**30, 2)
    line = json.dumps(report)
    print(line)
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(line + "\n")
    finite = seconds and all(math.isfinite(v) for v in clock.losses)
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
