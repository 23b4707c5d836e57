"""A third pruning method from a plugin file (tests/plugins/random_pruning.py, random unstructured
pruning): registered without touching the package, it runs a cascade under our runner, reaches
its keep ratios, its masks hold through retraining, and torchprune's launcher refuses it in one
line (torchprune has no such method). The network contract runs it too (test_network_contract)."""
import csv
import os

import pytest
import torch

from torchprune_flows.pruning import (PruningError, count_nonzero, count_parameters, get_masks, import_state,
                                      pruning_method)
from torchprune_flows.registry.plugins import load_plugins
from torchprune_flows.runner.cli import main
from torchprune_flows.runner.runs import RunFolder

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(HERE, "plugins", "random_pruning.py")


def test_unknown_methods_name_the_registered_ones():
    with pytest.raises(PruningError, match=r"unknown pruning method .FTT.; did you mean FT\b.*register_method"):
        pruning_method("FTT")


def test_the_plugin_method_runs_a_cascade(tiny_experiment_class, tmp_path, torch_single_thread):
    exp = tiny_experiment_class(tmp_path)
    exp.cfg["experiments"]["methods"] = ["RP", "WT"]
    exp.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.6, 0.3]}]
    assert exp.run("--plugin", PLUGIN) == 0
    out = exp.path("out")
    with open(os.path.join(out, "results.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    random_rows = sorted((r for r in rows if r["method"] == "RandomNet"), key=lambda r: -float(r["keep_ratio"]))
    assert [float(r["keep_ratio"]) for r in random_rows] == [0.6, 0.3]
    folder = RunFolder(out)
    network = tiny_experiment_class(tmp_path).cfg["network"]["name"]
    from torchprune_flows.registry import build_network

    previous_masks = None
    for i, row in enumerate(random_rows):
        original = int(row["params_original"])
        assert abs(int(row["params"]) / original - float(row["keep_ratio"])) <= 1.5 / original
        net = import_state(build_network(network, num_classes=2), folder.load_state(folder.pruned_step(0, 0, "RandomNet", i)))
        assert count_nonzero(net) == int(row["params"])  # retraining did not bring a pruned weight back
        masks = get_masks(net)
        for name, mask in masks.items():
            module, _, tensor = name.rpartition(".")
            assert not getattr(dict(net.named_modules())[module], tensor)[~mask].any()
            if previous_masks is not None:  # a cascade only adds to the masks
                assert not (mask & ~previous_masks[name]).any()
        previous_masks = masks
    assert count_parameters(net) == original


def test_torchprunes_launcher_refuses_a_method_it_lacks(tiny_experiment_class, tmp_path, capsys):
    exp = tiny_experiment_class(tmp_path)
    exp.cfg["experiments"]["methods"] = ["WT", "RP"]
    del exp.cfg["training"]["datasetKwargs"]  # ours only, refused first
    config = exp.write()
    assert main([config, "--engine", "torchprune", "--plugin", PLUGIN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: pruning method RP runs under our runner only")
    assert not os.path.exists(exp.path("out"))


def test_random_pruning_is_seeded_and_keeps_time_weights():
    load_plugins([PLUGIN])
    from torchprune_flows.registry import build_network

    masks = []
    for _ in range(2):
        torch.manual_seed(0)
        net = build_network("ffjord_l2_hm2_f1_softplus", num_classes=3)
        pruning_method("RP")(net, 0.4, count_parameters(net))
        masks.append(get_masks(net))
    assert masks[0].keys() == masks[1].keys() and all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
