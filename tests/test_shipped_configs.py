"""The configs we ship resolve, and the paper's configs hold the Sparse Flows paper's settings
(stated in the tables below, which are the reference: no file outside this one is needed)."""
import glob
import os

import numpy as np
import pytest

from conftest import REPO_ROOT
from torchprune_flows.runner.cli import check_names
from torchprune_flows.runner.config import keep_ratios, load_config, retraining_config
from torchprune_flows.registry import NETWORKS

#: every config meant to be run (included fragments live in sub-folders such as ffjord/toy/)
RUNNABLE = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "experiment_configs", "**", "*.yaml"), recursive=True)
    if os.path.basename(os.path.dirname(p)) in ("experiment_configs", "ffjord", "node")
)

# config: (network, D, batch, epochs, lr, weight decay, milestones, retrain epochs, retrain milestones,
#          keep ratios as (geometric (n, max, min), linear (n, max, min) or None), numNets)
TABULAR = {
    "power": ("ffjord_l3_hm10_f5_tanh", 6, 10000, 100, [90, 97], 100, [90, 97], (8, 0.7, 0.1), None, 1),
    "gas": ("ffjord_l3_hm20_f5_tanh", 8, 1000, 30, [25, 28], 30, [25, 28], (8, 0.7, 0.1), None, 1),
    "hepmass": ("ffjord_l2_hm10_f10_softplus", 21, 10000, 400, [325, 375], 300, [250, 295], (12, 0.8, 0.05), None, 1),
    "miniboone": ("ffjord_l2_hm20_f1_softplus", 43, 1000, 400, [300, 350], 400, [300, 350], (12, 0.8, 0.05),
                  (4, 0.04, 0.01), 3),
    "bsds300": ("ffjord_l3_hm20_f2_softplus", 63, 10000, 100, [96, 99], 100, [96, 99], (8, 0.7, 0.1), None, 1),
}


def test_every_runnable_config_is_found():
    assert "experiment_configs/quickstart.yaml" in RUNNABLE
    assert {f"experiment_configs/ffjord/{n}.yaml" for n in TABULAR} <= set(RUNNABLE)


@pytest.mark.parametrize("path", RUNNABLE)
def test_shipped_config_resolves(path, in_repo):
    cfg = load_config(path, [])
    check_names(cfg)
    assert cfg["experiments"]["methods"] and keep_ratios(cfg["experiments"])


@pytest.mark.parametrize("name", sorted(TABULAR))
def test_tabular_config_holds_the_paper_settings(name, in_repo):
    net, dim, batch, epochs, steps, re_epochs, re_steps, geometric, linear, nets = TABULAR[name]
    cfg = load_config(f"experiment_configs/ffjord/{name}.yaml", [])
    training, retraining = cfg["training"], retraining_config(cfg)
    assert cfg["network"] == {**cfg["network"], "name": net, "outputSize": dim, "dataset": name.capitalize()}
    assert net in NETWORKS
    assert (training["batchSize"], training["numEpochs"], training["optimizer"]) == (batch, epochs, "Adam")
    assert training["optimizerKwargs"] == {"lr": 1e-3, "weight_decay": 1e-6}
    assert training["loss"] == "NLLNatsLoss" and training["metricsTest"][0]["type"] == "NLLNats"
    assert training["earlyStopEpoch"] == 0 and training["enableAMP"] is False

    def milestones(section):
        (scheduler,) = section["lrSchedulers"]
        assert scheduler["type"] == "MultiStepLR" and scheduler["kwargs"] == {"gamma": 0.1}
        return scheduler["stepKwargs"]["milestones"]

    assert milestones(training) == steps
    assert (retraining["numEpochs"], milestones(retraining), retraining["startEpoch"]) == (re_epochs, re_steps, 0)
    expected = list(np.geomspace(geometric[1], geometric[2], geometric[0]))
    if linear:
        expected += list(np.linspace(linear[1], linear[2], linear[0]))
    assert np.allclose(keep_ratios(cfg["experiments"]), expected)
    exp = cfg["experiments"]
    assert (exp["mode"], sorted(exp["methods"]), exp["numNets"]) == ("cascade", ["FilterThresNet", "ThresNet"], nets)
    assert cfg["directories"]["training_data"] == "./data/training"


@pytest.mark.parametrize("name,network,dataset,flips", [
    ("mnist", "ffjord_multiscale_mnist", "MNIST", False), ("cifar10", "ffjord_multiscale_cifar", "CIFAR10", True)])
def test_image_config_holds_the_paper_settings(name, network, dataset, flips, in_repo):
    cfg = load_config(f"experiment_configs/ffjord/{name}.yaml", [])
    training = cfg["training"]
    assert (cfg["network"]["name"], cfg["network"]["dataset"], cfg["network"]["outputSize"]) == (network, dataset, 10)
    assert (training["batchSize"], training["numEpochs"], training["optimizer"]) == (200, 50, "Adam")
    assert training["optimizerKwargs"] == {"lr": 1e-3, "weight_decay": 0.0}
    (scheduler,) = training["lrSchedulers"]
    assert scheduler["stepKwargs"]["milestones"] == [45] and scheduler["kwargs"] == {"gamma": 0.1}
    assert training["loss"] == "NLLBitsLoss" and training["metricsTest"][0]["type"] == "NLLBits"
    assert training["earlyStopEpoch"] == 0
    assert {"type": "RandomNoise", "kwargs": {"normalization": 255.0}} in training["transformsFinal"]
    assert [t["type"] for t in training["transformsTrain"]] == (["RandomHorizontalFlip"] if flips else [])
    assert np.allclose(keep_ratios(cfg["experiments"]), np.geomspace(0.8, 0.05, 12))
    assert retraining_config(cfg)["startEpoch"] == 0 and cfg["experiments"]["mode"] == "cascade"
