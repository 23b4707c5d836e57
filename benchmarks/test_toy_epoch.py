"""The four toy configs' training epoch, this tree against a baseline revision, side by side.

For each of ``gaussians``, ``gaussiansspiral``, ``spirals`` (FFJORD toy densities) and NODE
``moons``: the config's base net is first trained for a few epochs by this tree (so the vector
field is past its trivial start and the NFE is representative), then one training epoch from
those weights is timed ``ROUNDS`` times for each tree (the second of two epochs per process: the
first pays one-time costs such as torch's first optimizer step importing ``torch._dynamo``), interleaved (baseline, current, current,
baseline, ...), each in its own process through ``benchmarks/toy_epoch.py`` (the runner's code
path: ``Experiment``, ``build_loaders``, ``train``; one thread). ``extra_info`` holds the median
epoch seconds and CPU seconds of both, their ratios and both NFE; pytest-benchmark times this
tree's epoch in-process.

The baseline is ``TOY_EPOCH_BASELINE`` (a git revision; default: main before the native solver,
``464ca51``), extracted with ``git archive`` into a temporary folder. Both trees train on this
tree's training rows (``toy_epoch.py --data``): the baseline's generators of gaussiansspiral,
spirals and moons drew other points (the data became torchdyn's after it). Run with
``python -m pytest benchmarks/test_toy_epoch.py --benchmark-json out.json``; also beside a
CPU-bound process (``python -c "while True: pass" &``) to see the shared-core case.
"""
import json
import os
import statistics
import subprocess
import sys
import tarfile
import io

import pytest
import torch

from torchprune_flows.pruning import import_state
from torchprune_flows.runner.config import resolve_config
from torchprune_flows.runner.data import build_loaders
from torchprune_flows.runner.pipeline import Experiment
from torchprune_flows.runner.training import train

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
BASELINE = os.environ.get("TOY_EPOCH_BASELINE", "464ca51")
ROUNDS = int(os.environ.get("TOY_EPOCH_ROUNDS", "3"))
#: config -> epochs of warm-up training (the toy sets differ in size: spirals has 32 batches)
CONFIGS = {
    "experiment_configs/ffjord/gaussians.yaml": 20,
    "experiment_configs/ffjord/gaussiansspiral.yaml": 20,
    "experiment_configs/ffjord/spirals.yaml": 8,
    "experiment_configs/node/moons.yaml": 20,
}


@pytest.fixture(scope="module")
def baseline_tree(tmp_path_factory):
    archive = subprocess.run(["git", "archive", BASELINE], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    folder = tmp_path_factory.mktemp("baseline")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return str(folder)


def _epochs(tree, config, data, state=None, epochs=2, save=None):
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
    args = [sys.executable, os.path.join(HERE, "toy_epoch.py"), config, "--epochs", str(epochs), "--data", data]
    args += ["--state", state] if state else []
    args += ["--save", save] if save else []
    out = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("config", list(CONFIGS), ids=[os.path.basename(c)[:-5] for c in CONFIGS])
def test_toy_epoch_against_baseline(benchmark, baseline_tree, tmp_path, config):
    benchmark.group = "toy epoch"
    state, data = str(tmp_path / "trained.pt"), str(tmp_path / "rows.pt")
    _epochs(REPO_ROOT, config, data, epochs=CONFIGS[config], save=state)  # also writes this tree's rows
    runs = {"baseline": [], "current": []}
    for i in range(ROUNDS):
        order = [("baseline", baseline_tree), ("current", REPO_ROOT)]
        for label, tree in (order if i % 2 == 0 else order[::-1]):
            runs[label].append(_epochs(tree, config, data, state=state))
    median = {label: statistics.median(r["seconds"][-1] for r in results) for label, results in runs.items()}
    cpu = {label: statistics.median(r["cpu_last_epoch"] for r in results) for label, results in runs.items()}
    nfe = {label: (results[-1]["nfe_forward"][-1], results[-1]["nfe_backward"][-1]) for label, results in runs.items()}
    loss = {label: results[-1]["train_loss"][-1] for label, results in runs.items()}
    benchmark.extra_info.update(
        config=config, baseline=BASELINE, rounds=ROUNDS,
        baseline_seconds=median["baseline"], current_seconds=median["current"],
        ratio=median["current"] / median["baseline"],
        baseline_cpu=cpu["baseline"], current_cpu=cpu["current"], cpu_ratio=cpu["current"] / cpu["baseline"],
        baseline_nfe=nfe["baseline"], current_nfe=nfe["current"],
        baseline_train_loss=loss["baseline"], current_train_loss=loss["current"])
    # the same epoch in this process, for pytest-benchmark's own statistics
    experiment = Experiment(resolve_config(os.path.join(REPO_ROOT, config), []).runs[0], "/nonexistent")
    tcfg = dict(experiment.training, numEpochs=1, earlyStopEpoch=1)
    rows = torch.load(data, weights_only=True)
    experiment.splits["train"].data, experiment.splits["train"].targets = rows["data"], rows["targets"]
    loaders = build_loaders(experiment.splits, tcfg, 0)

    def one_epoch():
        net = import_state(experiment.build_network(), torch.load(state, weights_only=True))
        train(net, {"train": loaders["train"]}, tcfg, experiment.loss_fn, experiment.metrics, "cpu", 0, 0, None)

    benchmark.pedantic(one_epoch, rounds=1, iterations=1)
    # same epoch, data order and probes: the losses agree to solver rounding, which can tip an
    # adaptive step decision (spirals: NFE-B 24.8 against 23.9, losses 1.0e-3 apart)
    assert loss["current"] == pytest.approx(loss["baseline"], rel=5e-3)
