"""``--workers N``: the sweep's independent chains as Ray tasks give the sequential results."""
import csv
import os

import pytest

ray = pytest.importorskip("ray")


def _rows(path):
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k not in ("seconds", "seconds_per_batch")} for row in rows]


def test_two_ray_workers_give_the_sequential_results(tiny):
    # two base nets: their references run as Ray tasks (with one, the driver trains it while Ray
    # starts: the killed-worker test below runs that way)
    tiny.cfg["experiments"]["numNets"] = 2
    tiny.cfg["experiments"]["methods"] = ["ThresNet", "FilterThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.6, 0.3]}]
    tiny.cfg["training"]["numEpochs"] = 1
    assert tiny.run(out="sequential") == 0
    assert tiny.run("--workers", "2", out="ray") == 0
    assert _rows(tiny.path("ray", "results.csv")) == _rows(tiny.path("sequential", "results.csv"))
    assert sorted(os.listdir(tiny.path("ray", "steps"))) == sorted(os.listdir(tiny.path("sequential", "steps")))
    assert tiny.run("--workers", "2", out="ray") == 0  # a rerun skips every finished step


def test_without_ray_workers_say_what_to_install(tiny, capsys, monkeypatch):
    import sys

    from conftest import one_error_line

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert tiny.run("--workers", "2") == 2
    one_error_line(capsys, "--workers needs Ray", "pip install -e \".[ray]\"")
    assert not os.path.exists(tiny.path("out"))


KILLER_PLUGIN = '''
import os
import signal

import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec
from torchprune_flows.pruning import PrunableMixin

CALLS = {"train": 0}


class Field(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, t, z):
        return self.fc2(torch.tanh(self.fc1(z)))

    def structured_chains(self):
        return [[(self.fc1, 0), (self.fc2, 0)]]


class KilledOnceFlow(PrunableMixin, FlowNetwork):
    """In a Ray worker (KILL_MARKER set): dies by SIGKILL in the 2nd epoch of its first pruned
    training, once (the marker file remembers it)."""

    def __init__(self, dim, hidden):
        solver = SolverSpec(method="dopri5", adjoint=True, atol=1e-4, rtol=1e-4)
        super().__init__([CNF(Field(dim, hidden), divergence="exact", solver=solver)], (dim,))

    def forward(self, x):
        marker = os.environ.get("KILL_MARKER")
        field = self.chain[0].vector_field
        pruned = bool((field.fc1.weight == 0).any())
        if marker and self.training and pruned:
            CALLS["train"] += 1
            if CALLS["train"] == 4 and not os.path.exists(marker):  # 3 batches an epoch: 2nd epoch
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


@tf.register_network("killed_once_flow")
def make(num_classes=2, num_in_channels=None, **kwargs):
    return KilledOnceFlow(num_classes, 8)
'''


def test_a_killed_worker_is_retried_and_resumes_with_the_same_numbers(tiny, monkeypatch, clean_modules):
    with open(tiny.path("killer_plugin.py"), "w") as handle:
        handle.write(KILLER_PLUGIN)
    monkeypatch.syspath_prepend(tiny.root)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tiny.root, os.environ.get("PYTHONPATH", "")]))
    clean_modules.append("killer_plugin")
    tiny.cfg["plugins"] = ["killer_plugin"]
    tiny.cfg["network"]["name"] = "killed_once_flow"
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.6, 0.3]}]
    tiny.cfg["training"]["numEpochs"] = 2
    assert tiny.run(out="uninterrupted") == 0
    marker = tiny.path("killed.marker")
    monkeypatch.setenv("KILL_MARKER", marker)
    assert tiny.run("--workers", "2", out="killed") == 0
    assert os.path.exists(marker)  # the worker really died once
    assert _rows(tiny.path("killed", "results.csv")) == _rows(tiny.path("uninterrupted", "results.csv"))


def test_chain_status_reads_the_running_step_from_its_log(tmp_path):
    import json

    from torchprune_flows.runner.runs import RunFolder
    from torchprune_flows.runner.scaleout import chain_status

    folder = RunFolder(str(tmp_path))
    steps = [folder.pruned_step(0, 0, "ThresNet", i) for i in range(2)]
    assert chain_status(folder, steps) == f"{steps[0]} starting"
    os.makedirs(os.path.dirname(folder.log(steps[0])))
    with open(folder.log(steps[0]), "w") as handle:
        handle.write(json.dumps({"epoch": 2, "train_loss": 1.23456, "nfe_forward": 20.0, "nfe_backward": 14.0}) + "\n")
    assert chain_status(folder, steps) == f"{steps[0]} ep 3 loss 1.235 nfe 20/14"
