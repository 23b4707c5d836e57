"""Time training epochs of a config's base net, with the runner's own code path, for one source tree.

``PYTHONPATH=TREE python benchmarks/toy_epoch.py CONFIG --state S --epochs N [--save PATH]`` prints
one JSON line: per epoch the training seconds (wall, the runner's own per-epoch record), the CPU
seconds of the last epoch (this thread), the mean NFE-F / NFE-B per batch and the training loss;
``--data FILE`` trains on the rows in FILE (written by the first call). It uses only the
runner API that every version of this package since the first release has (``resolve_config``,
``Experiment``, ``build_loaders``, ``train``), so the same script times an older checkout beside
the current one (``benchmarks/test_toy_epoch.py``). Like the runner: one torch thread, and freed
memory kept for reuse where that tree's runner does it.
"""
import argparse
import json
import os
import time

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--state", help="a checkpoint ({state_dict, masks}) to start from")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--start-epoch", type=int, default=0)
    parser.add_argument("--save", help="write the trained state here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="train on these rows ({data, targets}) instead of the tree's own; "
                                       "written here when the file does not exist yet")
    args = parser.parse_args()

    torch.set_num_threads(1)
    try:
        from torchprune_flows.runner.allocator import keep_freed_memory
    except ImportError:  # a tree from before the runner set it
        pass
    else:
        keep_freed_memory()
    from torchprune_flows.pruning import export_state, import_state
    from torchprune_flows.runner.config import resolve_config
    from torchprune_flows.runner.data import build_loaders
    from torchprune_flows.runner.pipeline import Experiment
    from torchprune_flows.runner.training import train

    run = resolve_config(args.config, []).runs[0]
    experiment = Experiment(run, "/nonexistent")
    torch.manual_seed(args.seed)
    net = experiment.build_network()
    if args.state:
        import_state(net, torch.load(args.state, weights_only=True))
    tcfg = dict(experiment.training, numEpochs=args.start_epoch + args.epochs)
    tcfg["earlyStopEpoch"] = tcfg["numEpochs"]  # no validation: training batches only
    if args.data:  # one set of points for both trees: a tree's toy generators may differ from another's
        rows = experiment.splits["train"]
        if os.path.exists(args.data):
            saved = torch.load(args.data, weights_only=True)
            rows.data, rows.targets = saved["data"], saved["targets"]
        else:
            torch.save({"data": rows.data, "targets": rows.targets}, args.data)
    loaders = build_loaders(experiment.splits, tcfg, args.seed)
    cpu = []

    def log(history):  # after every epoch: the CPU seconds of this thread since the last one
        cpu.append(time.thread_time())

    cpu.append(time.thread_time())
    summary = train(net, {"train": loaders["train"]}, tcfg, experiment.loss_fn, experiment.metrics, "cpu",
                    args.start_epoch, args.seed, None, desc="benchmark", log=log)
    if args.save:
        torch.save(export_state(net), args.save)
    history = summary["history"]
    print(json.dumps({
        "seconds": [r["seconds"] for r in history],
        "cpu_last_epoch": cpu[-1] - cpu[-2],
        "nfe_forward": [r["nfe_forward"] for r in history],
        "nfe_backward": [r["nfe_backward"] for r in history],
        "train_loss": [r["train_loss"] for r in history],
    }))


if __name__ == "__main__":
    main()
