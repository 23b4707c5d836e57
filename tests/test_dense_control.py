"""``experiments.control: dense``: the base net retrained through the cascade's cycles without
pruning (method ``DenseControl``, one row per cycle), beside the pruned nets in results.csv,
report.md and the loss plot; resumable (under ``--workers``: tests/test_scaleout.py; under torchrun:
tests/test_distributed.py)."""
import csv
import math
import os

import pytest
import torch

import torchprune_flows.runner.training as training_module
from conftest import one_error_line
from torchprune_flows.pruning import count_parameters, import_state
from torchprune_flows.registry import LOSSES, METRICS, NETWORKS
from torchprune_flows.runner.config import load_config, retraining_config
from torchprune_flows.runner.data import build_loaders, build_splits
from torchprune_flows.runner.pipeline import step_seed
from torchprune_flows.runner.results import DENSE_CONTROL, REFERENCE, read_results_csv
from torchprune_flows.runner.runs import RunFolder

pytestmark = pytest.mark.usefixtures("torch_single_thread")

KEEPS = [0.6, 0.3]
NUM_EPOCHS, START_EPOCH, LR = 3, 1, 1.0e-2


def _control_config(cfg):
    """The tiny config with the control, WT only, and a rewound schedule: the reference trains
    3 epochs, every retraining (pruned or dense) epochs 1-2 at the rewound learning rate."""
    cfg["experiments"].update(methods=["ThresNet"], control="dense",
                              spacing=[{"type": "manual", "values": KEEPS}])
    cfg["training"].update(numEpochs=NUM_EPOCHS, optimizerKwargs={"lr": LR, "weight_decay": 1.0e-5},
                           lrSchedulers=[{"type": "MultiStepLR", "kwargs": {"gamma": 0.5},
                                          "stepKwargs": {"milestones": [1, 2]}}])
    cfg["retraining"] = {"startEpoch": START_EPOCH}
    return cfg


@pytest.fixture(scope="module")
def control_run(tmp_path_factory, tiny_experiment_class, torch_single_thread):
    exp = tiny_experiment_class(tmp_path_factory.mktemp("control"))
    _control_config(exp.cfg)
    assert exp.run() == 0
    return exp, exp.path("out")


def _csv_rows(out):
    with open(os.path.join(out, "results.csv"), newline="") as handle:
        return [{k: v for k, v in row.items() if k not in ("seconds", "seconds_per_batch")}
                for row in csv.DictReader(handle)]


def _control_rows(out):
    rows = [r for r in read_results_csv(os.path.join(out, "results.csv")) if r["method"] == DENSE_CONTROL]
    return sorted(rows, key=lambda r: r["cycle"])


def test_the_control_runs_one_unpruned_cycle_per_keep_ratio_with_the_rewound_schedule(control_run):
    exp, out = control_run
    rows = read_results_csv(os.path.join(out, "results.csv"))
    params_original = count_parameters(NETWORKS.get(exp.cfg["network"]["name"])(num_classes=2))
    control = _control_rows(out)
    assert [r["cycle"] for r in control] == [1, 2]  # one cycle per keep ratio
    for row in control:
        assert (row["keep_ratio"], row["prune_ratio"], row["net"], row["repetition"]) == (1.0, 0.0, 0, 0)
        assert row["params"] == row["params_original"] == params_original
        assert row["converged"] and math.isfinite(row["test_loss"])
        assert row["epochs"] == NUM_EPOCHS - START_EPOCH
    # the pruned chain's rows carry their cycle, the base net cycle 0
    assert sorted((r["method"], r["cycle"], r["keep_ratio"]) for r in rows if r["method"] != DENSE_CONTROL) == \
        [(REFERENCE, 0, 1.0), ("ThresNet", 1, 0.6), ("ThresNet", 2, 0.3)]

    folder = RunFolder(out)
    for i in range(len(KEEPS)):
        step = folder.control_step(0, 0, i)
        assert step == f"net0_rep0_{DENSE_CONTROL}_{i:02d}"
        state = folder.load_state(step)
        assert state["masks"] == {}  # nothing pruned ...
        assert all(bool((v != 0).all()) for v in state["state_dict"].values())  # ... and nothing zero
        # the same rewinding as the cascade's cycle i: epochs [startEpoch, numEpochs), the
        # schedule's learning rate at startEpoch, a fresh optimizer
        pruned_log = _log(out, folder.pruned_step(0, 0, "ThresNet", i))
        control_log = _log(out, step)
        assert [r["epoch"] for r in control_log] == [r["epoch"] for r in pruned_log] == [1, 2]
        assert [r["lr"] for r in control_log] == [r["lr"] for r in pruned_log] == pytest.approx([LR / 2, LR / 4])


def _log(out, step):
    import json

    with open(RunFolder(out).log(step)) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _retrain_by_hand(cfg, start_state, seed):
    """One retraining cycle and its test loss, from the public building blocks (not the pipeline)."""
    tcfg = retraining_config(cfg)
    loss_fn = LOSSES.get(tcfg["loss"])(**tcfg["lossKwargs"])
    metrics = [METRICS.get(m["type"])(2, **m["kwargs"]) for m in tcfg["metricsTest"]]
    net = import_state(NETWORKS.get(cfg["network"]["name"])(num_classes=2), start_state)
    loaders = build_loaders(build_splits(cfg), tcfg, seed)
    device = torch.device("cpu")
    training_module.train(net, loaders, tcfg, loss_fn, metrics, device, tcfg["startEpoch"], seed, None)
    return training_module.evaluate(net, loaders["test"], loss_fn, metrics, device, seed)["loss"]


def test_each_cycle_retrains_the_previous_cycles_weights(control_run):
    exp, out = control_run
    cfg = load_config(exp.path("config.yaml"))
    folder = RunFolder(out)
    seed = step_seed(cfg["seed"], 0, 0, DENSE_CONTROL, 1)  # cycle 2 is the keep ratios' index 1
    cycle2 = _control_rows(out)[1]["test_loss"]
    by_hand = _retrain_by_hand(cfg, folder.load_state(folder.control_step(0, 0, 0)), seed)
    assert by_hand == pytest.approx(cycle2, rel=1e-6)
    # and not from the base net: that start gives another loss
    from_reference = _retrain_by_hand(cfg, folder.load_state(folder.reference_step(0)), seed)
    assert abs(from_reference - cycle2) > 1e-4


def test_an_interrupted_control_cycle_resumes_mid_epoch_with_the_same_rows(control_run, tiny, monkeypatch):
    _, first_out = control_run
    _control_config(tiny.cfg)
    folder = RunFolder(tiny.path("out"))
    partial = folder.partial_checkpoint(folder.control_step(0, 0, 1))
    original, calls = training_module.backward, []

    def interrupted(loss):  # the 2nd batch of cycle 2's 2nd epoch (its first epoch is checkpointed)
        if os.path.exists(partial):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return original(loss)

    monkeypatch.setattr(training_module, "backward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tiny.run()
    assert folder.is_finished(folder.control_step(0, 0, 0)) and not folder.is_finished(folder.control_step(0, 0, 1))
    assert torch.load(partial, weights_only=True)["epoch"] == 2
    monkeypatch.setattr(training_module, "backward", original)
    assert tiny.run() == 0
    assert not os.path.exists(partial)
    assert [r["epoch"] for r in _log(tiny.path("out"), folder.control_step(0, 0, 1))] == [1, 2]
    assert _csv_rows(tiny.path("out")) == _csv_rows(first_out)


def test_a_lost_cycle_is_recomputed_from_the_finished_cycle_before_it(control_run, tmp_path):
    """Killed between cycles: the rerun starts cycle 2 from cycle 1's stored weights."""
    import shutil

    from torchprune_flows.runner.cli import main

    exp, first_out = control_run
    out = str(tmp_path / "out")
    shutil.copytree(first_out, out)
    folder = RunFolder(out)
    lost = folder.control_step(0, 0, 1)
    os.remove(folder.record(lost))
    os.remove(folder.checkpoint(lost))
    assert main([exp.path("config.yaml"), "--out", out]) == 0
    assert _csv_rows(out) == _csv_rows(first_out)


def test_a_finished_run_gets_the_control_later_without_redoing_a_step(control_run, tiny):
    """The resume check lets only experiments.control differ: the control only adds steps."""
    _, first_out = control_run
    _control_config(tiny.cfg)
    del tiny.cfg["experiments"]["control"]
    assert tiny.run() == 0
    folder = RunFolder(tiny.path("out"))
    before = {step: os.stat(folder.checkpoint(step)).st_mtime_ns for step in folder.read_records()}
    assert not any(DENSE_CONTROL in step for step in before)
    tiny.cfg["experiments"]["control"] = "dense"
    assert tiny.run() == 0
    assert {step: os.stat(folder.checkpoint(step)).st_mtime_ns for step in before} == before
    assert _csv_rows(tiny.path("out")) == _csv_rows(first_out)
    tiny.cfg["seed"] = 1  # anything else still may not resume into it
    assert tiny.run() == 2


def _table(report, first_cell):
    """The cells of the first table whose header starts with ``first_cell``: (header, rows)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table[0], table[2:]


def test_report_shows_the_control_beside_the_cascade_by_cycle(control_run):
    _, out = control_run
    rows = read_results_csv(os.path.join(out, "results.csv"))
    with open(os.path.join(out, "report.md")) as handle:
        report = handle.read()
    header, body = _table(report, "Prune ratio (%)")
    assert header == ["Prune ratio (%)", "Cycle", "Number of parameters", "ThresNet", DENSE_CONTROL]
    reference = next(r for r in rows if r["method"] == REFERENCE)
    expected = {0: reference, **{r["cycle"]: r for r in _control_rows(out)}}
    pruned = {r["cycle"]: r for r in rows if r["method"] == "ThresNet"}
    assert [cells[:2] for cells in body] == [["0", "0"], ["40", "1"], ["70", "2"]]
    for cells in body:
        cycle = int(cells[1])
        control = expected[cycle]
        assert cells[4] == f"{control['test_loss']:.2f} ± {control['test_loss_se']:.2f}"
        if cycle:
            assert cells[3] == f"{pruned[cycle]['test_loss']:.2f} ± {pruned[cycle]['test_loss_se']:.2f}"
    assert "0 of 5 runs did not converge." in report


def test_loss_plot_draws_the_control_at_the_cascades_prune_ratios(control_run, tmp_path, monkeypatch):
    from torchprune_flows.runner import render

    _, out = control_run
    rows = read_results_csv(os.path.join(out, "results.csv"))
    drawn = {}

    def keep_lines(fig, path, dpi=120):  # the figure's lines instead of the PNG
        drawn[os.path.basename(path)] = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                                         for line in fig.axes[0].get_lines()}

    monkeypatch.setattr(render, "save_figure", keep_lines)
    render.write_report(rows, str(tmp_path))
    lines = drawn["ToyGaussians_loss.png"]
    label = next(name for name in lines if name.startswith(DENSE_CONTROL))
    x, y = lines[label]
    reference = next(r for r in rows if r["method"] == REFERENCE)
    assert x == pytest.approx([0.0, 40.0, 70.0])  # cycle i at the prune ratio of the cascade's cycle i
    assert y == pytest.approx([reference["test_loss"]] + [r["test_loss"] for r in _control_rows(out)])
    assert lines["ThresNet"][0] == pytest.approx([40.0, 70.0])


def test_control_config_errors_are_one_line(tiny, capsys):
    tiny.cfg["experiments"]["control"] = "sparse"
    assert tiny.run() == 2
    one_error_line(capsys, "experiments.control", "dense", "sparse")
    tiny.cfg["experiments"].update(control="dense", mode="retrain")
    assert tiny.run() == 2
    one_error_line(capsys, "experiments.control", "mode", "cascade")
    assert not os.path.exists(tiny.path("out"))
    tiny.cfg["experiments"]["mode"] = "cascade"
    tiny.cfg["training"].pop("datasetKwargs")  # what --engine torchprune refuses first
    from torchprune_flows.runner.cli import main

    assert main([tiny.write(), "--engine", "torchprune"]) == 2
    one_error_line(capsys, "experiments.control", "--engine torchprune")


def test_without_the_key_the_resolved_config_and_old_runs_are_unchanged(tiny, tmp_path):
    """Off by default and absent from the resolved config, so run folders written before the key
    existed resume (the resume check compares config.yaml); their rows get a cycle too."""
    cfg = load_config(tiny.write())
    assert "control" not in cfg["experiments"]
    assert load_config(tiny.write(), ["experiments.control=none"])["experiments"]["control"] == "none"
    # an old results.csv (no cycle column) still reads; old step records get their cycle from the name
    old = tmp_path / "old.csv"
    old.write_text("net,repetition,method,keep_ratio,prune_ratio,params,params_original,test_loss,test_loss_se,"
                   "test_metric,test_metric2,val_loss,nfe_forward,nfe_backward,flops,seconds_per_batch,epochs,"
                   "seconds,converged,dataset,network,estimator\n"
                   "0,0,ThresNet,0.6,0.4,49,82,2.7,0.01,1.0,,2.8,14,14,0.1,0.01,2,1.0,True,ToyGaussians,n,exact\n")
    (row,) = read_results_csv(str(old))
    assert row["cycle"] is None and row["params"] == 49 and row["test_loss"] == 2.7
    assert [RunFolder.step_cycle(s) for s in ("net1_ReferenceNet", "net0_rep0_ThresNet_00",
                                              "net0_rep1_DenseControl_11")] == [0, 1, 12]
