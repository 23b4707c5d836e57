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
    tiny.cfg["experiments"]["control"] = "dense"  # one more chain per base net: the unpruned cycles
    tiny.cfg["training"]["numEpochs"] = 1
    assert tiny.run(out="sequential") == 0
    assert tiny.run("--workers", "2", out="ray") == 0
    assert _rows(tiny.path("ray", "results.csv")) == _rows(tiny.path("sequential", "results.csv"))
    assert [(r["net"], r["cycle"]) for r in _rows(tiny.path("ray", "results.csv")) if r["method"] == "DenseControl"] \
        == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    assert sorted(os.listdir(tiny.path("ray", "steps"))) == sorted(os.listdir(tiny.path("sequential", "steps")))
    assert tiny.run("--workers", "2", out="ray") == 0  # a rerun skips every finished step


def test_without_ray_workers_say_what_to_install(tiny, capsys, monkeypatch):
    import sys

    from conftest import one_error_line

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert tiny.run("--workers", "2") == 2
    one_error_line(capsys, "--workers needs Ray", "pip install -e \".[ray]\"")
    assert not os.path.exists(tiny.path("out"))


#: the start of the test plugins: a small prunable flow (one CNF block, exact divergence)
PLUGIN_HEAD = '''
import os
import signal
import time

import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec
from torchprune_flows.pruning import PrunableMixin


class Field(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, t, z):
        return self.fc2(torch.tanh(self.fc1(z)))

    def structured_chains(self):
        return [[(self.fc1, 0), (self.fc2, 0)]]


class SmallFlow(PrunableMixin, FlowNetwork):
    def __init__(self, dim, hidden):
        solver = SolverSpec(method="dopri5", adjoint=True, atol=1e-4, rtol=1e-4)
        super().__init__([CNF(Field(dim, hidden), divergence="exact", solver=solver)], (dim,))

    def pruned(self):
        return bool((self.chain[0].vector_field.fc1.weight == 0).any())
'''

KILLER_PLUGIN = PLUGIN_HEAD + '''
CALLS = {"train": 0}


class KilledOnceFlow(SmallFlow):
    """In a Ray worker (KILL_MARKER set): dies by SIGKILL in the 2nd epoch of its first pruned
    training, once (the marker file remembers it)."""

    def forward(self, x):
        marker = os.environ.get("KILL_MARKER")
        if marker and self.training and self.pruned():
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


SLOW_PLUGIN = PLUGIN_HEAD + '''


class SlowWhenPrunedFlow(SmallFlow):
    """With SLOW_PRUNED set: every training batch of a pruned net takes 0.3 s more, so that a
    chain is still running when the test interrupts the sweep."""

    def forward(self, x):
        if os.environ.get("SLOW_PRUNED") and self.training and self.pruned():
            time.sleep(0.3)
        return super().forward(x)


@tf.register_network("slow_when_pruned_flow")
def make(num_classes=2, num_in_channels=None, **kwargs):
    return SlowWhenPrunedFlow(num_classes, 8)
'''


def _processes_mentioning(text):
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_ctrl_c_stops_the_ray_sweep_and_a_rerun_resumes(tiny, tmp_path):
    """Ctrl-C (SIGINT to the terminal's whole process group) while a chain runs on a Ray worker:
    the driver exits 130, no Ray process outlives it, and the rerun keeps every finished step."""
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    with open(tiny.path("slow_plugin.py"), "w") as handle:
        handle.write(SLOW_PLUGIN)
    tiny.cfg["plugins"] = ["slow_plugin"]
    tiny.cfg["network"]["name"] = "slow_when_pruned_flow"
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.6, 0.4, 0.3]}]
    tiny.cfg["training"]["numEpochs"] = 2
    config = tiny.write()
    ray_dir = tempfile.mkdtemp(prefix="rayc", dir="/tmp")  # short: Ray's socket paths live under it
    env = tiny.subprocess_env()
    env.update(PYTHONPATH=os.pathsep.join([tiny.root, env["PYTHONPATH"]]), RAY_TMPDIR=ray_dir, SLOW_PRUNED="1")
    command = [sys.executable, "-m", "experiment", config, "--out", tiny.path("out"), "--workers", "2"]
    steps = tiny.path("out", "steps")
    child = subprocess.Popen(command, env=env, cwd=tiny.root, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and child.poll() is None:
            if os.path.isdir(steps) and any("ThresNet" in name for name in os.listdir(steps)):
                break  # the chain has finished its first step and is in its second
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        finished = {name: open(os.path.join(steps, name), "rb").read() for name in os.listdir(steps)}
        assert len(finished) == 2  # the reference and the first keep ratio
        os.killpg(child.pid, signal.SIGINT)
        assert child.wait(timeout=120) == 130
        err = child.stderr.read().decode()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert "interrupted" in err and "Traceback" not in err, err[-2000:]
    deadline = time.time() + 20  # the driver waited for Ray's shutdown; give stragglers a moment
    while _processes_mentioning(ray_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(ray_dir) == []
    assert len(os.listdir(steps)) == 2  # the interrupted step left no record

    env.pop("SLOW_PRUNED")
    rerun = subprocess.run(command, env=env, cwd=tiny.root, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for name, content in finished.items():
        assert open(os.path.join(steps, name), "rb").read() == content  # kept, not redone
    assert len(os.listdir(steps)) == 4
    assert len(_rows(tiny.path("out", "results.csv"))) == 4


# -- issue 18: torchrun with --workers, an address nothing answers at, a real cluster ---------

def test_workers_under_torchrun_are_one_line(tiny, capsys, monkeypatch):
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; each rank would start its own Ray instance."""
    from conftest import one_error_line

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert tiny.run("--workers", "2") == 2
    one_error_line(capsys, "--workers / --ray-address do not combine with torchrun")
    assert not os.path.exists(tiny.path("out"))


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_address_where_no_cluster_answers_is_one_line_after_a_bounded_wait(tiny):
    """Ray's own connect retries for minutes (and ignores SIGTERM meanwhile); ours waits
    --ray-timeout seconds, names the address and how to start a cluster, and writes nothing."""
    import subprocess
    import sys

    port = _free_port()  # nothing listens there
    command = [sys.executable, "-m", "experiment", tiny.write(), "--out", tiny.path("out"), "--workers", "2",
               "--ray-address", f"127.0.0.1:{port}", "--ray-timeout", "2"]
    proc = subprocess.run(command, env=tiny.subprocess_env(), cwd=tiny.root, capture_output=True, text=True,
                          timeout=180)  # a guard against the old minutes-long hang, not a measurement
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"error: no Ray cluster answers at --ray-address 127.0.0.1:{port} within 2 s")
    assert f"'ray start --head --port {port}'" in lines[0] and "--ray-timeout" in lines[0]
    assert not os.path.exists(tiny.path("out"))


@pytest.fixture
def ray_head():
    """A real Ray head node on this machine (2 CPUs, no token authentication, its own temp folder
    so that no other process's ray.init() joins it); stopped by killing its processes."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray_cli):
        pytest.skip("the ray command is not installed beside this Python")
    temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths live under it
    port = _free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    try:
        subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "2", "--temp-dir", temp,
                        "--include-dashboard=false", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _processes_mentioning(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 15
            while _processes_mentioning(temp) and time.time() < deadline:
                time.sleep(0.2)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.filterwarnings("ignore:.*registered again")
def test_a_real_cluster_gives_the_sequential_results(tiny, ray_head, monkeypatch, clean_modules):
    """--ray-address against a head node started here: the results of the sequential run, with
    the network from a plugin *file* that the cluster's workers import from its path."""
    import subprocess
    import sys

    import uuid

    tag = uuid.uuid4().hex[:8]
    module, name = f"cluster_flows_{tag}", f"cluster_flow_{tag}"
    os.makedirs(tiny.path("flows"))
    with open(tiny.path("flows", module + ".py"), "w") as handle:
        handle.write(PLUGIN_HEAD + f"""

@tf.register_network("{name}")
def make(num_classes=2, num_in_channels=None, **kwargs):
    return SmallFlow(num_classes, 8)
""")
    clean_modules.append(module)
    tiny.cfg["network"]["name"] = name
    tiny.cfg["plugins"] = [tiny.path("flows", module + ".py")]
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.6, 0.3]}]
    assert tiny.run(out="sequential") == 0
    env = dict(tiny.subprocess_env(), RAY_AUTH_MODE="disabled")
    command = [sys.executable, "-m", "experiment", tiny.write(), "--out", tiny.path("cluster"),
               "--ray-address", ray_head]
    proc = subprocess.run(command, env=env, cwd=tiny.root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows(tiny.path("cluster", "results.csv")) == _rows(tiny.path("sequential", "results.csv"))
    assert sorted(os.listdir(tiny.path("cluster", "steps"))) == sorted(os.listdir(tiny.path("sequential", "steps")))
