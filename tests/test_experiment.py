"""End-to-end tests of the experiment runner (``python -m experiment`` / ``torchprune_flows.runner.cli.main``).

Every run uses the tiny config of ``conftest.py`` (an 82-parameter 2-D CNF, 240 training points,
1-3 epochs, 2 keep ratios), so a whole sweep takes a few seconds on one CPU thread.
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import uuid

import pytest
import torch
import yaml

import torchprune_flows.runner.training as training_module
from torchprune_flows.runner.cli import main
from torchprune_flows.runner.config import load_config
from torchprune_flows.runner.data import build_loaders, build_splits
from torchprune_flows.runner.training import train
from torchprune_flows.pruning import count_parameters, export_state, get_masks, import_state, prune
from torchprune_flows.registry import LOSSES, METRICS, NETWORKS

pytestmark = pytest.mark.usefixtures("torch_single_thread")

REQUIRED_COLUMNS = [
    "net", "repetition", "method", "keep_ratio", "prune_ratio", "params", "params_original",
    "test_loss", "test_metric", "val_loss", "nfe_forward", "nfe_backward", "epochs", "seconds",
    "converged",
]
LOG_FIELDS = {"train_loss", "nfe_forward", "nfe_backward", "lr", "epoch"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REFERENCE = "ReferenceNet"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def read_rows(out_dir):
    """results.csv as (header, rows) with rows as dicts of strings."""
    with open(os.path.join(out_dir, "results.csv"), newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def num(text):
    """A CSV cell as float (empty cell -> nan)."""
    return float(text) if text not in ("", None) else math.nan


def is_true(text):
    assert text in ("True", "False"), f"converged cell {text!r} is not True/False"
    return text == "True"


def row_key(row):
    return int(row["net"]), int(row["repetition"]), row["method"], round(num(row["keep_ratio"]), 8)


def by_key(rows):
    keyed = {}
    for row in rows:
        assert row_key(row) not in keyed, f"duplicate row for {row_key(row)}"
        keyed[row_key(row)] = row
    return keyed


def without_seconds(rows):
    """The rows without their wall-clock columns."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "seconds_per_batch")} for row in rows]


def read_log(out_dir, step):
    with open(os.path.join(out_dir, "logs", step + ".jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_ckpt(out_dir, step):
    return torch.load(os.path.join(out_dir, "checkpoints", step + ".pt"), weights_only=True)


def file_stamps(out_dir, *folders):
    """``{relative path: st_mtime_ns}`` of every file in ``folders`` of ``out_dir``."""
    stamps = {}
    for folder in folders:
        root = os.path.join(out_dir, folder)
        for name in sorted(os.listdir(root)):
            stamps[os.path.join(folder, name)] = os.stat(os.path.join(root, name)).st_mtime_ns
    return stamps


def build_net(name, out_size=2):
    return NETWORKS.get(name)(num_classes=out_size)


def masks_contained(inner, outer):
    """Every entry pruned in ``outer`` is pruned in ``inner`` (``inner`` <= ``outer``)."""
    assert set(outer) <= set(inner), f"masks {sorted(set(outer) - set(inner))} disappeared"
    return all(not bool((inner[k] & ~outer[k]).any()) for k in outer)


def assert_masks_equal(actual, expected):
    assert set(actual) == set(expected)
    for key in expected:
        assert torch.equal(actual[key].bool(), expected[key].bool()), f"mask {key} differs"


def step_name(method, index, net=0, rep=0):
    return f"net{net}_rep{rep}_{method}_{index:02d}"


def expected_lr(lr, gamma, milestones, epoch):
    """MultiStepLR with epoch milestones, evaluated at the start of ``epoch`` (no torch involved)."""
    return lr * gamma ** sum(1 for m in milestones if m <= epoch)


PLUGIN_FLOW = '''
import torch
from torch import nn

import torchprune_flows
from conftest import NaNGradient  # plugins of these tests are imported in the test process
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec
from torchprune_flows.networks.base import PrunableMixin


class TinyField(nn.Module):
    """f(t, z) = W2 tanh(W1 z + b1) + b2: a chain fc1 -> fc2 for structured pruning."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    poison = False  # set: the parameters' gradients are NaN (outputs and divergence stay finite)

    def forward(self, t, z):
        out = self.fc2(torch.tanh(self.fc1(z)))
        return out + 0.0 * NaNGradient.apply(self.fc2.bias).sum() if self.poison else out

    def structured_chains(self):
        return [[(self.fc1, 0), (self.fc2, 0)]]


class TinyPluginFlow(PrunableMixin, FlowNetwork):
    def __init__(self, dim, hidden):
        field = TinyField(dim, hidden)
        solver = SolverSpec(method="dopri5", adjoint=True, atol=1e-4, rtol=1e-4)
        super().__init__([CNF(field, divergence="exact", solver=solver)], (dim,))
        self.original_weights = 2 * dim * hidden

    def zero_weight_fraction(self):
        """Share of the original weights pruned: masked to zero, or gone from a compacted copy."""
        field = self.chain[0].vector_field
        weights = [field.fc1.weight, field.fc2.weight]  # effective (masked) weights
        return 1.0 - sum(int((w != 0).sum()) for w in weights) / self.original_weights


class FragileFlow(TinyPluginFlow):
    """Returns NaN outputs once more than half of its prunable weights are zero."""

    def forward(self, x):
        out = super().forward(x)
        if self.zero_weight_fraction() > 0.5:
            out = {"z": out["z"] * float("nan"), "delta_logp": out["delta_logp"]}
        return out


class BackwardFragileFlow(TinyPluginFlow):
    """Finite outputs, but NaN in the backward (adjoint) pass once more than half is pruned."""

    def forward(self, x):
        self.chain[0].vector_field.poison = self.zero_weight_fraction() > 0.5
        return super().forward(x)


FLOW_CLASS = {FLOW_CLASS}


@torchprune_flows.register_network("{NAME}")
def make_flow(num_classes=2, num_in_channels=None, **kwargs):
    return FLOW_CLASS(num_classes, 8)
'''

PLUGIN_PARAMS = 2 * 8 + 8 + 8 * 2 + 2


def write_plugin(root, clean_modules, flow_class="TinyPluginFlow"):
    """A plugin module in ``root`` registering a uniquely named network; returns (module, name)."""
    tag = uuid.uuid4().hex[:10]
    module, name = f"sparse_flow_plugin_{tag}", f"tiny_plugin_flow_{tag}"
    text = PLUGIN_FLOW.replace("{FLOW_CLASS}", flow_class).replace("{NAME}", name)
    with open(os.path.join(str(root), module + ".py"), "w") as handle:
        handle.write(text)
    clean_modules.append(module)
    return module, name


def use_plugin_flow(tiny, monkeypatch, clean_modules, flow_class="TinyPluginFlow"):
    """Write a plugin registering ``flow_class``, make it importable and the tiny config's network,
    trained one epoch per step; returns (module, name). The plugin is not loaded yet."""
    module, name = write_plugin(tiny.root, clean_modules, flow_class=flow_class)
    monkeypatch.syspath_prepend(tiny.root)
    tiny.cfg["network"]["name"] = name
    tiny.cfg["training"]["numEpochs"] = 1
    return module, name


# ------------------------------------------------------------------------------------------------
# one shared cascade run, the conftest fixture cascade_run (tests 1, 2, 5, 6 read it)
# ------------------------------------------------------------------------------------------------




# 1 ------------------------------------------------------------------------------------------------


def test_cascade_run_writes_complete_results(cascade_run):
    exp, out, rc = cascade_run
    assert rc == 0
    cfg = exp.cfg
    methods = cfg["experiments"]["methods"]
    keeps = cfg["experiments"]["spacing"][0]["values"]
    num_epochs = cfg["training"]["numEpochs"]

    header, rows = read_rows(out)
    assert set(REQUIRED_COLUMNS) <= set(header), f"missing columns {set(REQUIRED_COLUMNS) - set(header)}"
    keyed = by_key(rows)

    reference = [r for r in rows if r["method"] == REFERENCE]
    assert len(reference) == 1
    assert num(reference[0]["keep_ratio"]) == 1.0 and num(reference[0]["prune_ratio"]) == 0.0
    expected_keys = {(0, 0, REFERENCE, 1.0)} | {(0, 0, m, round(k, 8)) for m in methods for k in keeps}
    assert set(keyed) == expected_keys

    params_original = count_parameters(build_net(cfg["network"]["name"]))
    for row in rows:
        keep = num(row["keep_ratio"])
        assert int(row["params_original"]) == params_original
        assert num(row["prune_ratio"]) == pytest.approx(1.0 - keep)
        assert int(float(row["params"])) / params_original == pytest.approx(keep, abs=0.04), row
        assert is_true(row["converged"]), row
        assert float(row["nfe_forward"]) > 0 and float(row["nfe_backward"]) > 0
        assert math.isfinite(num(row["test_loss"])) and math.isfinite(num(row["val_loss"]))
        assert math.isfinite(num(row["test_metric"]))
        assert int(row["epochs"]) == num_epochs  # retraining startEpoch defaults to 0
        assert num(row["seconds"]) > 0
    # a pruned net really has fewer parameters than the reference
    assert all(int(float(r["params"])) < params_original for r in rows if r["method"] != REFERENCE)

    # steps/<step>.json holds the same row as results.csv
    steps = sorted(n[:-5] for n in os.listdir(os.path.join(out, "steps")) if n.endswith(".json"))
    assert steps == sorted(["net0_ReferenceNet"] + [step_name(m, i) for m in methods for i in range(len(keeps))])
    for step in steps:
        with open(os.path.join(out, "steps", step + ".json")) as handle:
            saved = json.load(handle)
        row = keyed[(saved["net"], saved["repetition"], saved["method"], round(saved["keep_ratio"], 8))]
        assert num(row["test_loss"]) == saved["test_loss"]

    # report.md holds a markdown table naming every method
    with open(os.path.join(out, "report.md")) as handle:
        report = handle.read()
    table_lines = [line for line in report.splitlines() if line.startswith("|")]
    assert len(table_lines) >= 2 + 1 + len(keeps), report
    assert any(set(line.replace("|", "").strip()) <= set("-: ") for line in table_lines), "no separator row"
    for method in methods:
        assert method in report

    # plots are PNG files
    plots = [os.path.join(out, "plots", n) for n in os.listdir(os.path.join(out, "plots"))]
    assert plots and all(p.endswith(".png") for p in plots)
    for path in plots:
        with open(path, "rb") as handle:
            assert handle.read(8) == PNG_MAGIC

    # every checkpoint loads with weights_only=True; one per step, no partial leftovers
    ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert ckpts == sorted(s + ".pt" for s in steps)
    for name in ckpts:
        state = torch.load(os.path.join(out, "checkpoints", name), weights_only=True)
        assert set(state) >= {"state_dict", "masks"}

    # one log record per epoch
    for step in steps:
        records = read_log(out, step)
        assert [r["epoch"] for r in records] == list(range(num_epochs))
        assert all(LOG_FIELDS <= set(r) for r in records)

    # config.yaml is the resolved config (defaults filled in)
    with open(os.path.join(out, "config.yaml")) as handle:
        written = yaml.safe_load(handle)
    assert written["training"]["testBatchSize"] == cfg["training"]["batchSize"]
    assert written["training"]["earlyStopEpoch"] == num_epochs
    assert written["experiments"]["numNets"] == 1 and written["retraining"]["startEpoch"] == 0
    assert written == load_config(exp.path("config.yaml"))


# 2 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ThresNet", "FilterThresNet"])
def test_masks_stay_zero_and_cascade(cascade_run, method):
    exp, out, rc = cascade_run
    assert rc == 0
    name = exp.cfg["network"]["name"]
    keeps = exp.cfg["experiments"]["spacing"][0]["values"]
    params_original = count_parameters(build_net(name))
    _, rows = read_rows(out)
    keyed = by_key(rows)
    states = [load_ckpt(out, step_name(method, i)) for i in range(len(keeps))]

    for i, state in enumerate(states):
        masks, sd = state["masks"], state["state_dict"]
        assert masks, "a pruned step has no masks"
        assert any(bool((~m).any()) for m in masks.values())
        for key, mask in masks.items():
            assert mask.dtype == torch.bool and mask.shape == sd[key].shape
            assert bool((sd[key][~mask] == 0).all()), f"{key}: pruned entries regrew in retraining"
            assert bool((sd[key][mask] != 0).any())  # retrained, not all zero
        # the row's parameter count is the checkpoint's nonzero count
        fresh = build_net(name)
        nonzero = sum(int((sd[k] != 0).sum()) for k, _ in fresh.named_parameters())
        assert nonzero == int(float(keyed[(0, 0, method, round(keeps[i], 8))]["params"]))

    # cascade: the second ratio's masks contain the zeros of the first ...
    assert masks_contained(states[1]["masks"], states[0]["masks"])
    # ... and are exactly what pruning the first ratio's *retrained* weights gives
    net = import_state(build_net(name), states[0])
    prune(net, method, keeps[1], params_original)
    assert_masks_equal(get_masks(net), states[1]["masks"])


# 3 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_epoch", [1, 2])
def test_learning_rate_rewinding(tiny, start_epoch):
    lr, gamma, milestones, num_epochs = 0.1, 0.1, [1, 2], 3
    tiny.cfg["training"].update(
        optimizer="SGD", optimizerKwargs={"lr": lr}, numEpochs=num_epochs,
        lrSchedulers=[{"type": "MultiStepLR", "kwargs": {"gamma": gamma}, "stepKwargs": {"milestones": milestones}}],
    )
    tiny.cfg["retraining"] = {"startEpoch": start_epoch}
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    assert tiny.run() == 0
    out = tiny.path("out")

    ref = read_log(out, "net0_ReferenceNet")
    assert ref[0]["lr"] == pytest.approx(lr, rel=1e-9)
    assert [r["epoch"] for r in ref] == list(range(num_epochs))
    for record in ref:
        assert record["lr"] == pytest.approx(expected_lr(lr, gamma, milestones, record["epoch"]), rel=1e-9)

    _, rows = read_rows(out)
    keyed = by_key(rows)
    assert int(keyed[(0, 0, REFERENCE, 1.0)]["epochs"]) == num_epochs
    keeps = tiny.cfg["experiments"]["spacing"][0]["values"]
    for i, keep in enumerate(keeps):
        step = step_name("ThresNet", i)
        records = read_log(out, step)
        assert len(records) == num_epochs - start_epoch
        assert [r["epoch"] for r in records] == list(range(start_epoch, num_epochs))
        assert records[0]["lr"] == pytest.approx(expected_lr(lr, gamma, milestones, start_epoch), rel=1e-9)
        for record in records:
            assert record["lr"] == pytest.approx(expected_lr(lr, gamma, milestones, record["epoch"]), rel=1e-9)
        assert int(keyed[(0, 0, "ThresNet", round(keep, 8))]["epochs"]) == num_epochs - start_epoch
        with open(os.path.join(out, "steps", step + ".json")) as handle:
            lr_start = json.load(handle)["extra"]["lr_start"]
        assert lr_start == pytest.approx(expected_lr(lr, gamma, milestones, start_epoch), rel=1e-9)


# 4 ------------------------------------------------------------------------------------------------


def _check_plugin_rows(out, name, methods):
    _, rows = read_rows(out)
    assert {r["method"] for r in rows} == {REFERENCE, *methods}
    assert len(rows) == 1 + 2 * len(methods)
    for row in rows:
        assert row["network"] == name
        assert int(row["params_original"]) == PLUGIN_PARAMS
        assert is_true(row["converged"]) and math.isfinite(num(row["test_loss"]))


def test_plugin_from_config(tiny, monkeypatch, clean_modules, capsys):
    module, name = use_plugin_flow(tiny, monkeypatch, clean_modules)

    # without the plugin the name is unknown, and nothing is written
    assert tiny.run(out="no_plugin") == 2
    assert "unknown network" in capsys.readouterr().err
    assert not os.path.exists(tiny.path("no_plugin"))

    tiny.cfg["plugins"] = [module]
    assert tiny.run() == 0
    _check_plugin_rows(tiny.path("out"), name, ["ThresNet", "FilterThresNet"])
    ft = load_ckpt(tiny.path("out"), step_name("FilterThresNet", 1))
    # structured pruning used the plugin's chain: fc1 rows and matching fc2 columns are gone
    fc1 = [k for k in ft["masks"] if k.endswith("fc1.weight")]
    fc2 = [k for k in ft["masks"] if k.endswith("fc2.weight")]
    assert fc1 and fc2
    dead_rows = ~ft["masks"][fc1[0]].any(dim=1)
    assert bool(dead_rows.any())
    assert not bool(ft["masks"][fc2[0]][:, dead_rows].any())


def test_plugin_flag(tiny, monkeypatch, clean_modules):
    module, name = use_plugin_flow(tiny, monkeypatch, clean_modules)
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    assert tiny.run("--plugin", module) == 0
    _check_plugin_rows(tiny.path("out"), name, ["ThresNet"])


# 5 ------------------------------------------------------------------------------------------------


def test_resume_skips_finished_steps_and_recomputes_missing_one(cascade_run, tmp_path, capsys):
    exp, first_out, rc = cascade_run
    assert rc == 0
    out = str(tmp_path / "out")
    shutil.copytree(first_out, out)  # copy2 keeps the mtimes
    config = exp.path("config.yaml")
    folders = ("checkpoints", "steps", "logs")
    before = file_stamps(out, *folders)
    _, rows_before = read_rows(out)

    assert main([config, "--out", out]) == 0
    assert file_stamps(out, *folders) == before, "a finished step was recomputed"
    assert read_rows(out)[1] == rows_before

    # as if killed before the last step finished: its row and checkpoint are missing
    victim = step_name("FilterThresNet", 1)
    old_state = load_ckpt(out, victim)
    os.remove(os.path.join(out, "steps", victim + ".json"))
    os.remove(os.path.join(out, "checkpoints", victim + ".pt"))
    assert main([config, "--out", out]) == 0
    after = file_stamps(out, *folders)
    changed = {path for path in before if after.get(path) != before[path]}
    assert changed == {os.path.join(f, victim + ext) for f, ext in
                       [("steps", ".json"), ("checkpoints", ".pt"), ("logs", ".jsonl")]}
    _, rows_after = read_rows(out)
    assert without_seconds(rows_after) == without_seconds(rows_before)  # per-step seeds
    old, new = by_key(rows_before), by_key(rows_after)
    for key in old:
        assert num(new[key]["test_loss"]) == pytest.approx(num(old[key]["test_loss"]), abs=1e-6)
    new_state = load_ckpt(out, victim)
    assert_masks_equal(new_state["masks"], old_state["masks"])
    for key, value in old_state["state_dict"].items():
        assert torch.allclose(new_state["state_dict"][key], value, atol=1e-6)
    assert len(read_log(out, victim)) == exp.cfg["training"]["numEpochs"]

    # a different config may not resume into this folder
    capsys.readouterr()
    assert main([config, "--out", out, "--set", "seed=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "different config" in err[0]
    assert file_stamps(out, *folders) == after


def test_more_base_nets_resume_into_a_finished_run_and_match_a_fresh_run(cascade_run, tmp_path, capsys):
    """Raising experiments.numNets only adds steps: the finished net's files stay untouched, the new
    net's rows are those of a run that had both nets from the start, and fewer nets are refused."""
    exp, first_out, rc = cascade_run
    assert rc == 0 and exp.cfg["experiments"].get("numNets", 1) == 1
    out = str(tmp_path / "out")
    shutil.copytree(first_out, out)
    config = exp.path("config.yaml")
    folders = ("checkpoints", "steps", "logs")
    before = file_stamps(out, *folders)
    assert main([config, "--out", out, "--set", "experiments.numNets=2"]) == 0
    after = file_stamps(out, *folders)
    assert {path: after[path] for path in before} == before, "a finished step was recomputed"
    assert any(os.path.basename(path).startswith("net1_") for path in set(after) - set(before))
    fresh = str(tmp_path / "fresh")
    assert main([config, "--out", fresh, "--set", "experiments.numNets=2"]) == 0
    grown, from_start = read_rows(out)[1], read_rows(fresh)[1]
    assert sorted(int(r["net"]) for r in grown).count(1) == len(grown) // 2
    assert without_seconds(grown) == without_seconds(from_start)
    capsys.readouterr()
    assert main([config, "--out", out]) == 2  # one net again: that would drop finished steps
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different config" in err[0]


def _resume_setup(tiny, pruned):
    tiny.cfg["training"]["numEpochs"] = 3
    tiny.cfg["training"]["lrSchedulers"] = [
        {"type": "MultiStepLR", "kwargs": {"gamma": 0.5}, "stepKwargs": {"milestones": [1, 2]}}]
    cfg = load_config(tiny.write())
    tcfg = cfg["training"]
    splits = build_splits(cfg)
    loss_fn = LOSSES.get(tcfg["loss"])(**tcfg["lossKwargs"])
    metrics = [METRICS.get(m["type"])(2, **m["kwargs"]) for m in tcfg["metricsTest"]]
    name = cfg["network"]["name"]
    torch.manual_seed(1234)
    initial = build_net(name)
    if pruned:
        prune(initial, "ThresNet", 0.5, count_parameters(initial))
    initial = export_state(initial)

    def fresh():
        return import_state(build_net(name), initial)

    def run(net, checkpoint, log):
        loaders = build_loaders(splits, tcfg, seed=7)
        return train(net, loaders, tcfg, loss_fn, metrics, torch.device("cpu"), 0, 7, checkpoint, log=log)

    return fresh, run


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_train_resumes_from_epoch_checkpoint(tiny, pruned):
    fresh, run = _resume_setup(tiny, pruned)

    straight_log = []
    straight = fresh()
    run(straight, None, lambda history: straight_log.__setitem__(slice(None), history))
    assert [r["epoch"] for r in straight_log] == [0, 1, 2]

    checkpoint = tiny.path("partial.pt")

    def interrupt_after_epoch_0(history):  # the log is written after the epoch's checkpoint
        if history[-1]["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(fresh(), checkpoint, interrupt_after_epoch_0)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1

    resumed_log = []
    resumed = fresh()
    summary = run(resumed, checkpoint, lambda history: resumed_log.__setitem__(slice(None), history))
    assert [r["epoch"] for r in resumed_log] == [0, 1, 2]  # the whole run's records, none twice
    assert summary["epochs"] == 3
    resumed_log = resumed_log[1:]
    for got, want in zip(resumed_log, straight_log[1:]):
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-6)
    a, b = export_state(straight), export_state(resumed)
    assert_masks_equal(b["masks"], a["masks"])
    for key, value in a["state_dict"].items():
        assert torch.allclose(b["state_dict"][key], value, atol=1e-6), key


@pytest.mark.parametrize("kill_call, step", [
    (2, "net0_ReferenceNet"),  # killed in the reference training's epoch 1
    (4, step_name("ThresNet", 0)),
], ids=["reference", "pruned"])
def test_pipeline_resumes_interrupted_training(cascade_run, tiny, monkeypatch, kill_call, step):
    """Killed in the middle of a (re)training, between epochs: the rerun continues that step."""
    _, first_out, rc = cascade_run
    assert rc == 0
    original = training_module._train_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_call:  # ReferenceNet: calls 1, 2; ThresNet_00: calls 3, 4
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(training_module, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tiny.run()
    assert os.path.exists(tiny.path("out", "checkpoints", step + ".partial.pt"))
    assert not os.path.exists(tiny.path("out", "steps", step + ".json"))

    monkeypatch.setattr(training_module, "_train_epoch", original)
    assert tiny.run() == 0
    out = tiny.path("out")
    assert not any(n.endswith(".partial.pt") for n in os.listdir(os.path.join(out, "checkpoints")))
    assert [r["epoch"] for r in read_log(out, step)] == [0, 1]
    assert without_seconds(read_rows(out)[1]) == without_seconds(read_rows(first_out)[1])


def test_pipeline_log_has_one_record_per_epoch_after_kill_during_checkpoint(tiny, monkeypatch):
    original = training_module.save_checkpoint
    calls = []

    def killed_while_saving(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # ThresNet_00's checkpoint after its epoch 1
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    monkeypatch.setattr(training_module, "save_checkpoint", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        tiny.run()
    monkeypatch.setattr(training_module, "save_checkpoint", original)
    assert tiny.run() == 0
    assert [r["epoch"] for r in read_log(tiny.path("out"), step_name("ThresNet", 0))] == [0, 1]


# 6 ------------------------------------------------------------------------------------------------


def test_runs_are_deterministic(cascade_run, tiny):
    exp, first_out, rc = cascade_run
    assert rc == 0
    assert tiny.cfg == exp.cfg
    torch.manual_seed(987)  # the global RNG state must not matter
    assert tiny.run(out="second") == 0
    header_a, rows_a = read_rows(first_out)
    header_b, rows_b = read_rows(tiny.path("second"))
    assert header_a == header_b
    assert without_seconds(rows_a) == without_seconds(rows_b)
    for step in os.listdir(os.path.join(first_out, "checkpoints")):
        a = torch.load(os.path.join(first_out, "checkpoints", step), weights_only=True)
        b = torch.load(tiny.path("second", "checkpoints", step), weights_only=True)
        for key, value in a["state_dict"].items():
            assert torch.equal(b["state_dict"][key], value), (step, key)


# 7 ------------------------------------------------------------------------------------------------


def _run_plugin_flow(tiny, monkeypatch, clean_modules, flow_class, keeps, methods=None):
    """Run the tiny sweep (one epoch per step) on the plugin flow ``flow_class``; returns its folder."""
    module, _ = use_plugin_flow(tiny, monkeypatch, clean_modules, flow_class)
    tiny.cfg["plugins"] = [module]
    if methods is not None:
        tiny.cfg["experiments"]["methods"] = methods
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": keeps}]
    assert tiny.run() == 0
    return tiny.path("out")


def test_non_convergence_is_recorded(tiny, monkeypatch, clean_modules):
    out = _run_plugin_flow(tiny, monkeypatch, clean_modules, "FragileFlow", [0.8, 0.3, 0.2])
    _, rows = read_rows(out)
    keyed = by_key(rows)
    assert len(rows) == 1 + 2 * 3
    assert is_true(keyed[(0, 0, REFERENCE, 1.0)]["converged"])
    for method in ("ThresNet", "FilterThresNet"):
        good = keyed[(0, 0, method, 0.8)]
        assert is_true(good["converged"]) and math.isfinite(num(good["test_loss"]))
        for keep in (0.3, 0.2):
            bad = keyed[(0, 0, method, keep)]
            assert not is_true(bad["converged"]), bad
            assert not math.isfinite(num(bad["test_loss"]))
        # the run after a diverged ratio starts from the pruned weights: the masks still nest
        m = [load_ckpt(out, step_name(method, i))["masks"] for i in range(3)]
        assert masks_contained(m[1], m[0]) and masks_contained(m[2], m[1])
    with open(os.path.join(out, "report.md")) as handle:
        report = handle.read()
    table_rows = [line for line in report.splitlines() if line.startswith("| 70 ") or line.startswith("| 80 ")]
    assert table_rows and all("N/A" in line for line in table_rows), report
    good_rows = [line for line in report.splitlines() if line.startswith("| 20 ")]
    assert good_rows and "N/A" not in good_rows[0]


def test_divergence_in_the_backward_pass_is_a_result(tiny, monkeypatch, clean_modules):
    """A failed adjoint solve raises inside loss.backward(): recorded, not a crash, sweep goes on."""
    out = _run_plugin_flow(tiny, monkeypatch, clean_modules, "BackwardFragileFlow", [0.8, 0.3], methods=["ThresNet"])
    keyed = by_key(read_rows(out)[1])
    assert is_true(keyed[(0, 0, REFERENCE, 1.0)]["converged"])
    assert is_true(keyed[(0, 0, "ThresNet", 0.8)]["converged"])
    bad = keyed[(0, 0, "ThresNet", 0.3)]
    assert not is_true(bad["converged"]), bad
    with open(os.path.join(out, "steps", step_name("ThresNet", 1) + ".json")) as handle:
        error = json.load(handle)["extra"]["error"]
    assert "backward" in error or "non-finite gradients" in error, error


# 8 ------------------------------------------------------------------------------------------------


def _set(path, value):
    def tweak(cfg):
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return tweak


def _rename_epochs(cfg):
    cfg["training"]["numEpoch"] = cfg["training"].pop("numEpochs")


BAD_INPUTS = {
    # id: (tweak of the config dict or raw YAML text, extra argv, words the message must contain)
    "unknown_network": (_set(["network", "name"], "fjord_l2_h8_sigmoid_da"), [], ["did you mean", "ffjord_"]),
    "bad_activation": (_set(["network", "name"], "ffjord_l2_h8_sigmod_da"), [], ["sigmod", "sigmoid"]),
    "unknown_dataset": (_set(["network", "dataset"], "ToyGausians"), [], ["did you mean", "ToyGaussians"]),
    "unknown_loss": (_set(["training", "loss"], "NLLPrirLoss"), [], ["did you mean", "NLLPriorLoss"]),
    "malformed_yaml": ("network: {name: [oops\ntraining: 1\n", [], ["YAML"]),
    "missing_include": ("file: nope.yaml\n", [], ["nope.yaml"]),
    "keep_above_one": (_set(["experiments", "spacing"], [{"type": "manual", "values": [0.6, 1.5]}]), [], ["1.5"]),
    "keep_zero": (_set(["experiments", "spacing"], [{"type": "manual", "values": [0.5, 0]}]), [], ["keep ratio"]),
    "keep_zero_linear": (_set(["experiments", "spacing"],
                              [{"type": "linear", "numIntervals": 3, "maxVal": 0.5, "minVal": 0.0}]), [],
                         ["keep ratio"]),
    "unknown_key": (_rename_epochs, [], ["numEpoch", "did you mean", "numEpochs"]),
    "unknown_method": (_set(["experiments", "methods"], ["ThresNett"]), [], ["did you mean", "ThresNet"]),
    "unknown_plugin_in_config": (_set(["plugins"], ["no_such_plugin_mod_xyz"]), [], ["no_such_plugin_mod_xyz"]),
    "unknown_plugin_flag": (None, ["--plugin", "no_such_plugin_mod_xyz"], ["no_such_plugin_mod_xyz"]),
    "bad_override": (None, ["--set", "training.numEpochs"], ["="]),
    "override_unknown_key": (None, ["--set", "training.numEpoch=3"], ["did you mean", "numEpochs"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_line(tiny, capsys, case):
    tweak, extra, words = BAD_INPUTS[case]
    if isinstance(tweak, str):
        tiny.write(cfg=tweak)
        rc = main([tiny.path("config.yaml"), "--out", tiny.path("out"), *extra])
    else:
        if tweak is not None:
            tweak(tiny.cfg)
        rc = tiny.run(*extra)
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:")
    for word in words:
        assert word in lines[0], lines[0]
    assert not os.path.exists(tiny.path("out"))


def test_missing_config_file(tiny, capsys):
    assert main([tiny.path("nope.yaml"), "--out", tiny.path("out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope.yaml" in lines[0]
    assert not os.path.exists(tiny.path("out"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_device(tiny, capsys):
    assert tiny.run("--device", "cuda") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "cuda" in lines[0].lower()
    assert not os.path.exists(tiny.path("out"))


def test_activation_typo_suggests_close_match(tiny, capsys):
    tiny.cfg["network"]["name"] = "ffjord_l2_h8_sigmod_da"
    assert tiny.run() == 2
    assert "did you mean" in capsys.readouterr().err


def test_bad_input_subprocess(tiny):
    tiny.cfg["network"]["dataset"] = "ToyGausians"
    config = tiny.write()
    proc = subprocess.run([sys.executable, "-m", "experiment", config, "--out", tiny.path("out")],
                          cwd=tiny.root, env=tiny.subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "did you mean" in lines[0] and "ToyGaussians" in lines[0]
    assert not os.path.exists(tiny.path("out"))


def test_listing_command_from_unknown_loss_hint_works(tiny, capsys):
    tiny.cfg["training"]["loss"] = "NLLPrirLoss"
    assert tiny.run() == 2
    err = capsys.readouterr().err
    command = err.split("list all with: ")[1].split(")")[0].split()
    assert command[:3] == ["python", "-m", "torchprune_flows.registry"]
    proc = subprocess.run([sys.executable, *command[1:]], cwd=tiny.root, env=tiny.subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "NLLPriorLoss" in proc.stdout


# 9 ------------------------------------------------------------------------------------------------


def test_set_overrides_take_effect(tiny):
    tiny.cfg["training"]["numEpochs"] = 1
    rc = tiny.run("--set", "experiments.methods=[WT]", "--set", "training.optimizerKwargs={lr: 0.01}",
                  "--set", "experiments.spacing.0.values=[0.5]")
    assert rc == 0
    out = tiny.path("out")
    with open(os.path.join(out, "config.yaml")) as handle:
        written = yaml.safe_load(handle)
    assert written["experiments"]["methods"] == ["WT"]
    assert written["training"]["optimizerKwargs"] == {"lr": 0.01}
    assert written["experiments"]["spacing"] == [{"type": "manual", "values": [0.5]}]
    _, rows = read_rows(out)
    assert sorted((r["method"], num(r["keep_ratio"])) for r in rows) == [(REFERENCE, 1.0), ("ThresNet", 0.5)]
    assert read_log(out, "net0_ReferenceNet")[0]["lr"] == pytest.approx(0.01)
    assert read_log(out, step_name("ThresNet", 0))[0]["lr"] == pytest.approx(0.01)


# 10 -----------------------------------------------------------------------------------------------


def test_retrain_mode_prunes_every_ratio_from_reference(tiny):
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"].update(mode="retrain", methods=["WT", "FT"])
    assert tiny.run() == 0
    out = tiny.path("out")
    _, rows = read_rows(out)
    keyed = by_key(rows)
    keeps = tiny.cfg["experiments"]["spacing"][0]["values"]
    assert set(keyed) == {(0, 0, REFERENCE, 1.0)} | {(0, 0, m, k) for m in ("ThresNet", "FilterThresNet")
                                                     for k in keeps}
    assert all(is_true(r["converged"]) for r in rows)
    name = tiny.cfg["network"]["name"]
    reference = load_ckpt(out, "net0_ReferenceNet")
    params_original = count_parameters(build_net(name))
    for method in ("ThresNet", "FilterThresNet"):
        for i, keep in enumerate(keeps):
            net = import_state(build_net(name), reference)
            prune(net, method, keep, params_original)
            assert_masks_equal(load_ckpt(out, step_name(method, i))["masks"], get_masks(net))


def test_train_mode_only_trains_reference_nets(tiny):
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"]["mode"] = "train"
    tiny.cfg["experiments"]["numNets"] = 2
    del tiny.cfg["experiments"]["spacing"]
    assert tiny.run() == 0
    out = tiny.path("out")
    _, rows = read_rows(out)
    assert sorted(int(r["net"]) for r in rows) == [0, 1]
    assert all(r["method"] == REFERENCE and num(r["keep_ratio"]) == 1.0 for r in rows)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["net0_ReferenceNet.pt", "net1_ReferenceNet.pt"]
    # independently initialised nets
    a, b = load_ckpt(out, "net0_ReferenceNet"), load_ckpt(out, "net1_ReferenceNet")
    assert any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_second_run_on_the_same_folder_is_refused(tiny, capsys):
    import fcntl

    tiny.cfg["training"]["numEpochs"] = 1
    os.makedirs(tiny.path("out"))
    with open(tiny.path("out", ".lock"), "w") as held:  # another process holding the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert tiny.run() == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "another run is writing" in lines[0]
    assert not os.path.exists(tiny.path("out", "results.csv"))
    assert tiny.run() == 0


def test_customizations_run_one_experiment_each(tiny):
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"]["methods"] = ["WT"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    tiny.cfg["customizations"] = [{"key": ["network", "name"], "value": "cnf_l2_h8_tanh_high_tol"},
                                  {"key": ["training", "optimizerKwargs", "lr"], "value": 0.001}]
    assert tiny.run() == 0
    subdirs = sorted(d for d in os.listdir(tiny.path("out")) if os.path.isdir(tiny.path("out", d)))
    assert len(subdirs) == 2
    by_label = {d: read_rows(tiny.path("out", d))[1] for d in subdirs}
    small = [rows for label, rows in by_label.items() if "cnf_l2_h8" in label][0]
    assert {r["network"] for r in small} == {"cnf_l2_h8_tanh_high_tol"}
    assert int(small[0]["params_original"]) == 2 * 8 + 8 + 8 * 2 + 2
    lr_label = [label for label in by_label if "lr" in label][0]
    with open(tiny.path("out", lr_label, "config.yaml")) as handle:
        assert yaml.safe_load(handle)["training"]["optimizerKwargs"]["lr"] == 0.001
