"""Measurements behind docs/paper_gaps.md: the unpruned Gaussians flow against Table S11.

``python benchmarks/paper_gaps.py seeds --nets 5 --out DIR`` trains base nets 0..N-1 of
``experiment_configs/ffjord/gaussians.yaml`` exactly as ``python -m experiment ... --set
experiments.mode=train`` does (same init and training seeds, the runner's ``train``), but stops
after each of the last ``--last`` epochs to record, with the exact divergence, the validation,
test and training-split NLL; after the last epoch it also records the estimators and data
conventions of torchprune's code (one Hutchinson probe; the test split normalised by its own
mean and std). One JSON file per net in DIR (``net{N}.json``); a rerun skips finished nets and
starts an unfinished one again.

``python benchmarks/paper_gaps.py units CHECKPOINT --units 1 5 --out DIR`` prunes a trained base
net (a run folder's ``checkpoints/net0_ReferenceNet.pt``) with FT to that many hidden units,
retrains it with the config's schedule and records its exact test NLL: what the paper's table
would show for a flow of that size.

``python benchmarks/paper_gaps.py summary DIR`` prints the tables of docs/paper_gaps.md.

Run it with one thread and low priority: ``OMP_NUM_THREADS=1 nice -n 10 python ...``
(about 6 minutes per net on one core).
"""
import argparse
import json
import math
import os
import statistics
import sys

import numpy as np
import torch

from torchprune_flows.cnf import with_divergence
from torchprune_flows.pruning import compact, import_state, prune, write_back
from torchprune_flows.registry import LOSSES, METRICS, load_plugins
from torchprune_flows.runner.config import resolve_config
from torchprune_flows.runner.data import build_loaders, build_splits
from torchprune_flows.runner.pipeline import build_loss, build_network, step_seed
from torchprune_flows.runner.atomic_files import load_checkpoint
from torchprune_flows.runner.training import train

CONFIG = "experiment_configs/ffjord/gaussians.yaml"


def nll_per_sample(net, x, divergence, seed=0, batch=8190):
    """Per-sample NLL (nats) of ``x`` under ``net`` with the estimator ``divergence``."""
    loss_fn = LOSSES.get("NLLPriorLoss")()
    torch.manual_seed(seed)
    net.eval()
    values = []
    with torch.no_grad(), with_divergence(net, divergence):
        for chunk in torch.split(x, batch):
            values.append(loss_fn.per_sample(net(chunk)).double())
    return torch.cat(values)


def mean_se(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def own_normalised(split):
    """The split's points normalised by their own scalar mean and std (torchprune's toy data),
    instead of the training split's (ours); also returns the two stds."""
    raw = split.data.double() * split.std + split.mean
    own = (raw - raw.mean()) / raw.std()
    return own.float(), float(raw.std())


def measure_net(cfg, net_idx, out_dir, last):
    path = os.path.join(out_dir, f"net{net_idx}.json")
    if os.path.exists(path):
        return json.load(open(path))
    splits = build_splits(cfg)
    tcfg = dict(cfg["training"])
    seed = step_seed(cfg["seed"], net_idx, "train")
    torch.manual_seed(step_seed(cfg["seed"], net_idx, "init"))
    net = build_network(cfg)
    loaders = build_loaders(splits, tcfg, seed)
    loss_fn = build_loss(cfg)
    metrics = [METRICS.get(m["type"])(2) for m in tcfg["metricsTest"]]
    ckpt = os.path.join(out_dir, f"net{net_idx}.partial.pt")
    if os.path.exists(ckpt):  # the per-epoch records of an interrupted net are gone: start it again
        os.remove(ckpt)
    xs = {name: splits[name].data for name in ("train", "val", "test")}
    num_epochs = tcfg["numEpochs"]
    epochs = []
    history = []
    for stop in [num_epochs - last] + list(range(num_epochs - last + 1, num_epochs + 1)):
        summary = train(net, loaders, dict(tcfg, numEpochs=stop), loss_fn, metrics, "cpu", 0, seed, ckpt,
                        desc=f"net{net_idx}")
        history = summary["history"]
        record = {"epoch": stop - 1, "train_loss_logged": history[-1]["train_loss"]}
        for name, x in xs.items():
            record[f"{name}_exact"] = mean_se(nll_per_sample(net, x, "exact"))[0]
        epochs.append(record)
        print(json.dumps(record), flush=True)
    own_test, test_std = own_normalised(splits["test"])
    final = {
        "test_exact": mean_se(nll_per_sample(net, xs["test"], "exact")),
        "test_hutchinson_1probe": mean_se(nll_per_sample(net, xs["test"], "hutchinson", seed=1)),
        "train_exact": mean_se(nll_per_sample(net, xs["train"], "exact")),
        "train_hutchinson_1probe": mean_se(nll_per_sample(net, xs["train"], "hutchinson", seed=1)),
        "test_own_normalisation_exact": mean_se(nll_per_sample(net, own_test, "exact")),
        "train_std": splits["train"].std, "test_own_std": test_std,
        "train_mean": splits["train"].mean,
    }
    result = {"net": net_idx, "epochs": epochs, "final": final,
              "train_loss_per_epoch": [h["train_loss"] for h in history]}
    with open(path + ".tmp", "w") as handle:
        json.dump(result, handle, indent=1)
    os.replace(path + ".tmp", path)
    os.remove(ckpt)
    return result


def measure_units(cfg, reference, num_units, out_dir):
    """FT-prune the trained ``reference`` state to ``num_units`` hidden units, retrain, evaluate."""
    path = os.path.join(out_dir, f"units{num_units}.json")
    if os.path.exists(path):
        return json.load(open(path))
    splits = build_splits(cfg)
    net = import_state(build_network(cfg), reference)
    params = sum(p.numel() for p in net.parameters())
    hidden = next(m for m in net.modules() if isinstance(m, torch.nn.Linear)).out_features
    per_unit = (params - 2) // hidden  # in-weights, bias, out-weights of one hidden unit
    prune(net, "FT", (per_unit * num_units + 2) / params, params)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert int((first.weight != 0).any(dim=1).sum()) == num_units
    seed = step_seed(cfg["seed"], "units", num_units)
    tcfg = dict(cfg["training"])
    work = compact(net)
    loss_fn = build_loss(cfg)
    metrics = [METRICS.get(m["type"])(2) for m in tcfg["metricsTest"]]
    summary = train(work, build_loaders(splits, tcfg, seed), tcfg, loss_fn, metrics, "cpu", 0, seed, None,
                    desc=f"{num_units} units")
    write_back(work, net)
    result = {"units": num_units, "params": sum(int((t != 0).sum()) for t in compact(net).parameters()),
              "test_exact": mean_se(nll_per_sample(net, splits["test"].data, "exact")),
              "train_loss_last_epochs": [h["train_loss"] for h in summary["history"][-5:]]}
    with open(path, "w") as handle:
        json.dump(result, handle, indent=1)
    return result


def summary(out_dir):
    nets = sorted((json.load(open(os.path.join(out_dir, f))) for f in os.listdir(out_dir)
                   if f.startswith("net") and f.endswith(".json")), key=lambda r: r["net"])
    print("| net | test (exact) | test, own normalisation | train split (exact) | train, 1 probe | "
          "val last-20 min-max | val last-20 mean | swing: mean abs epoch-to-epoch change |")
    print("|---|---|---|---|---|---|---|---|")
    keys = ["test_exact", "test_own_normalisation_exact", "train_exact", "train_hutchinson_1probe"]
    for r in nets:
        f = r["final"]
        val = [e["val_exact"] for e in r["epochs"][-20:]]  # epochs 80-99
        swing = statistics.mean(abs(a - b) for a, b in zip(val[1:], val[:-1]))
        cells = [f"{f[k][0]:.4f} ± {f[k][1]:.4f}" for k in keys]
        print(f"| {r['net']} | " + " | ".join(cells) +
              f" | {min(val):.3f}-{max(val):.3f} | {statistics.mean(val):.4f} | {swing:.4f} |")
    for k in keys + ["test_hutchinson_1probe"]:
        vals = [r["final"][k][0] for r in nets]
        sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        print(f"{k}: mean {statistics.mean(vals):.4f} ± {sd / math.sqrt(len(vals)):.4f} (SE over nets), "
              f"sd {sd:.4f}, range {min(vals):.4f}-{max(vals):.4f}")
    own_effect = [r["final"]["test_own_normalisation_exact"][0] - r["final"]["test_exact"][0] for r in nets]
    print("own-normalisation effect on test NLL per net:", [f"{d:+.4f}" for d in own_effect])
    stds = [(r["final"]["train_std"], r["final"]["test_own_std"]) for r in nets[:1]]
    print("train std, test's own std (seed's data):", stds,
          "2 log(ratio):", 2 * math.log(stds[0][1] / stds[0][0]))
    best = [min(e["test_exact"] for e in r["epochs"]) for r in nets]
    print("best test NLL over the last epochs per net:", [f"{b:.4f}" for b in best],
          f"mean {statistics.mean(best):.4f}")
    slopes = [float(np.polyfit([e["epoch"] for e in r["epochs"][-20:]], [e["test_exact"] for e in r["epochs"][-20:]],
                               1)[0]) for r in nets]
    print("least-squares slope of the test NLL over epochs 80-99 per net (nats per epoch):",
          [f"{v:+.4f}" for v in slopes])
    escape = [next(i for i, v in enumerate(r["train_loss_per_epoch"]) if v < 2.5) for r in nets]
    print("first epoch with training loss below 2.5 nats (end of the initial plateau) per net:", escape)
    gaps = [r["final"]["test_exact"][0] - r["final"]["train_exact"][0] for r in nets]
    print("test - train (exact) per net:", [f"{g:+.4f}" for g in gaps])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    seeds = sub.add_parser("seeds")
    seeds.add_argument("--nets", type=int, default=5)
    seeds.add_argument("--first", type=int, default=0)
    seeds.add_argument("--last", type=int, default=20, help="record the last N epochs")
    seeds.add_argument("--out", required=True)
    units = sub.add_parser("units")
    units.add_argument("checkpoint")
    units.add_argument("--units", type=int, nargs="+", required=True)
    units.add_argument("--out", required=True)
    report = sub.add_parser("summary")
    report.add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "summary":
        return summary(args.out)
    torch.set_num_threads(1)
    load_plugins([])
    cfg = resolve_config(CONFIG, ["experiments.mode=train"]).cfg
    os.makedirs(args.out, exist_ok=True)
    if args.command == "units":
        reference = load_checkpoint(args.checkpoint)
        for num_units in args.units:
            print(json.dumps(measure_units(cfg, reference, num_units, args.out)), flush=True)
        return 0
    for net_idx in range(args.first, args.first + args.nets):
        result = measure_net(cfg, net_idx, args.out, args.last)
        print(f"net{net_idx}: test {result['final']['test_exact'][0]:.4f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
