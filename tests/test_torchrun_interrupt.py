"""Ctrl-C under torchrun (here: 2 Gloo processes, as torchrun starts them): SIGINT reaches every
rank, each stops with exit code 130 and one of them (rank 0) prints the resume line; rerunning
resumes from the finished steps and ends with the uninterrupted run's numbers (issue 18)."""
import csv
import os
import socket
import sys

import pytest
import torch.multiprocessing as mp

#: a small flow that, with INTERRUPT_AT=N set, raises KeyboardInterrupt (what SIGINT raises in the
#: main thread) at its N-th training forward pass of a pruned net, on every rank alike
PLUGIN = '''
import os

import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec
from torchprune_flows.pruning import PrunableMixin

CALLS = [0]


class Field(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, t, z):
        return self.fc2(torch.tanh(self.fc1(z)))

    def structured_chains(self):
        return [[(self.fc1, 0), (self.fc2, 0)]]


class InterruptedFlow(PrunableMixin, FlowNetwork):
    def __init__(self, dim, hidden):
        solver = SolverSpec(method="dopri5", adjoint=True, atol=1e-4, rtol=1e-4)
        super().__init__([CNF(Field(dim, hidden), divergence="exact", solver=solver)], (dim,))

    def forward(self, x):
        at = int(os.environ.get("INTERRUPT_AT", "0"))
        if at and self.training and bool((self.chain[0].vector_field.fc1.weight == 0).any()):
            CALLS[0] += 1
            if CALLS[0] == at:
                raise KeyboardInterrupt
        return super().forward(x)


@tf.register_network("interrupted_flow")
def make(num_classes=2, num_in_channels=None, **kwargs):
    return InterruptedFlow(num_classes, 8)
'''


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank, size, port, config, out, log_dir, interrupt_at):
    """One torchrun rank: its environment, its own stderr file, the command line's exit code."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(size), INTERRUPT_AT=str(interrupt_at))
    err = open(os.path.join(log_dir, f"stderr_rank{rank}"), "w")
    os.dup2(err.fileno(), 2)
    sys.stderr = err
    sys.path.insert(0, os.path.dirname(config))
    from torchprune_flows.runner.cli import run_from_command_line

    code = run_from_command_line([config, "--out", out, "--threads", "1"])
    with open(os.path.join(log_dir, f"exit_code_rank{rank}"), "w") as handle:
        handle.write(str(code))


def _launch(tiny, name, interrupt_at):
    log_dir = tiny.path(f"{name}_logs")
    os.makedirs(log_dir, exist_ok=True)
    mp.spawn(_rank, args=(2, _free_port(), tiny.path("config.yaml"), tiny.path("ranks"), log_dir, interrupt_at),
             nprocs=2)
    codes = [open(os.path.join(log_dir, f"exit_code_rank{r}")).read() for r in range(2)]
    errs = [open(os.path.join(log_dir, f"stderr_rank{r}")).read() for r in range(2)]
    return codes, errs


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.filterwarnings("ignore:.*registered again")
def test_ctrl_c_under_torchrun_stops_every_rank_says_so_once_and_the_rerun_resumes(tiny, monkeypatch, clean_modules):
    with open(tiny.path("interrupt_plugin.py"), "w") as handle:
        handle.write(PLUGIN)
    monkeypatch.syspath_prepend(tiny.root)
    clean_modules.append("interrupt_plugin")
    tiny.cfg["plugins"] = ["interrupt_plugin"]
    tiny.cfg["network"]["name"] = "interrupted_flow"
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.6, 0.3]}]
    assert tiny.run(out="single") == 0  # uninterrupted, one process
    codes, errs = _launch(tiny, "interrupted", interrupt_at=4)  # 3 batches an epoch: in the 2nd epoch
    assert codes == ["130", "130"], errs
    lines = [line for err in errs for line in err.splitlines() if line.startswith("interrupted")]
    assert lines == ["interrupted: finished steps and the last finished epoch are saved; rerun the same "
                     "command to resume"], errs
    assert all("Traceback" not in err for err in errs), errs
    assert sorted(os.listdir(tiny.path("ranks", "steps"))) == ["net0_ReferenceNet.json"]
    reference = open(tiny.path("ranks", "steps", "net0_ReferenceNet.json")).read()
    codes, errs = _launch(tiny, "resumed", interrupt_at=0)
    assert codes == ["0", "0"], errs
    assert open(tiny.path("ranks", "steps", "net0_ReferenceNet.json")).read() == reference  # kept, not redone
    single, ranks = _rows(tiny.path("single", "results.csv")), _rows(tiny.path("ranks", "results.csv"))
    assert [(r["method"], r["keep_ratio"], r["params"], r["converged"]) for r in ranks] == \
        [(r["method"], r["keep_ratio"], r["params"], r["converged"]) for r in single]
    for a, b in zip(ranks, single):  # 2 ranks average the gradients of shards: equal up to rounding
        assert float(a["test_loss"]) == pytest.approx(float(b["test_loss"]), rel=1e-3), a["method"]
