"""The ablation sweep configs (supplement S7) and ``python -m experiment.analyze sweep``."""
import csv
import glob
import os
import re

import pytest
import torch
import yaml

from conftest import REPO_ROOT, tiny_config_dict
from torchprune_flows.runner.commands import main as analyze
from torchprune_flows.runner.cli import check_names
from torchprune_flows.runner.config import expand_customizations, load_config, retraining_config
from torchprune_flows.runner.results import RESULT_COLUMNS, write_results_csv
from torchprune_flows.pruning import count_parameters
from torchprune_flows.registry import NETWORKS

ABLATION = os.path.join("experiment_configs", "ffjord", "ablation")
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO_ROOT, ABLATION, "*.yaml")))

SHAPES = ["l8_h64", "l8_h37", "l8_h18", "l8_h10", "l6_h45", "l6_h22", "l6_h12", "l4_h128", "l4_h64", "l4_h30",
          "l4_h17", "l3_h90", "l3_h43", "l3_h23", "l2_h1700", "l2_h400", "l2_h128", "l2_h64"]
#: shapes of (approximately) the same parameter count; max / min count within MATCHED_WITHIN
GROUPS = [
    ["l2_h128", "l3_h23", "l4_h17", "l6_h12", "l8_h10"],  # 642 .. 712
    ["l2_h400", "l3_h43", "l4_h30", "l6_h22", "l8_h18"],  # 2,002 .. 2,144
    ["l2_h1700", "l3_h90", "l4_h64", "l6_h45", "l8_h37"],  # 8,502 .. 8,642
]
MATCHED_WITHIN = 1.12


def variants(name):
    cfg = load_config(os.path.join(ABLATION, name))
    return cfg, expand_customizations(cfg)


def test_the_three_sweeps_are_shipped():
    assert CONFIGS == ["activations.yaml", "depth_width.yaml", "optimizers.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_variant_loads_and_resolves_its_names(name, in_repo):
    cfg, expanded = variants(name)
    base = load_config("experiment_configs/ffjord/gaussians.yaml")
    assert len(expanded) == len(cfg["customizations"]) >= 4
    labels = [label for label, _ in expanded]
    assert len(set(labels)) == len(labels) and all(re.fullmatch(r"[A-Za-z0-9._=,+_-]+", lab) for lab in labels)
    for _, variant in expanded:
        check_names(variant)
        assert variant["customizations"] == []
        assert variant["network"]["dataset"] == "ToyGaussians" and variant["network"]["outputSize"] == 2
        # everything but the customized entry is the "Gaussians" toy setting
        assert variant["experiments"] == base["experiments"]
        assert retraining_config(variant) == {**variant["training"], "startEpoch": 0}
        if name != "optimizers.yaml":
            assert variant["training"] == base["training"]
        variant_rest = {k: v for k, v in variant.items() if k not in ("network", "training", "customizations")}
        base_rest = {k: v for k, v in base.items() if k not in ("network", "training", "customizations")}
        assert variant_rest == base_rest


def parameter_count(shape):
    return count_parameters(NETWORKS.get(f"ffjord_{shape}_sigmoid_da")(num_classes=2))


def test_depth_width_sweeps_the_reference_shapes_at_matched_parameter_counts(in_repo):
    _, expanded = variants("depth_width.yaml")
    names = [variant["network"]["name"] for _, variant in expanded]
    assert sorted(names) == sorted(f"ffjord_{shape}_sigmoid_da" for shape in SHAPES)
    counts = {shape: parameter_count(shape) for shape in SHAPES}
    for shape, count in counts.items():  # Linear(2,H), (L-2) x Linear(H,H), Linear(H,2)
        layers, hidden = map(int, re.fullmatch(r"l(\d+)_h(\d+)", shape).groups())
        assert count == 5 * hidden + 2 + (layers - 2) * (hidden * hidden + hidden)
    assert counts["l2_h128"] == 642 and counts["l4_h64"] == 8642  # README, "Networks, data, objectives"
    for group in GROUPS:
        sizes = [counts[shape] for shape in group]
        assert max(sizes) / min(sizes) <= MATCHED_WITHIN, dict(zip(group, sizes))
        assert sorted(int(re.match(r"l(\d+)_", shape).group(1)) for shape in group) == [2, 3, 4, 6, 8]
    grouped = [counts[g[0]] for g in GROUPS]
    assert grouped[0] * 2.5 < grouped[1] and grouped[1] * 3 < grouped[2]  # the groups are different sizes


def test_activations_sweep_the_four_activations_on_the_gaussians_shape(in_repo):
    _, expanded = variants("activations.yaml")
    assert [variant["network"]["name"] for _, variant in expanded] == [
        f"ffjord_l2_h128_{act}_da" for act in ("sigmoid", "softplus", "tanh", "relu")]


def test_optimizer_variants_build_and_sgd_changes_only_the_optimizer(in_repo):
    cfg, expanded = variants("optimizers.yaml")
    base = cfg["training"]
    settings = []
    for _, variant in expanded:
        training = variant["training"]
        optimizer = getattr(torch.optim, training["optimizer"])([torch.nn.Parameter(torch.zeros(3))],
                                                                **training["optimizerKwargs"])
        assert optimizer.defaults["lr"] == training["optimizerKwargs"]["lr"]
        rest = {k: v for k, v in training.items() if k not in ("optimizer", "optimizerKwargs")}
        assert rest == {k: v for k, v in base.items() if k not in ("optimizer", "optimizerKwargs")}
        settings.append((training["optimizer"], training["optimizerKwargs"]))
    assert settings[0] == ("AdamW", {"lr": 5e-3, "weight_decay": 1e-5})  # the Gaussians setting first
    assert {name for name, _ in settings} == {"AdamW", "Adam", "SGD"}
    assert ("SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-5}) in settings
    assert len({repr(s) for s in settings}) == len(settings)


# ---------------------------------------------------------------------------------------------
# python -m experiment.analyze sweep
# ---------------------------------------------------------------------------------------------


def result_row(method, keep, loss, network, net=0):
    row = dict.fromkeys(RESULT_COLUMNS)
    row.update(net=net, repetition=0, method=method, keep_ratio=keep, prune_ratio=1 - keep, params=int(100 * keep),
               params_original=100, test_loss=loss, converged=True, dataset="ToyGaussians", network=network,
               epochs=1)
    return row


def fake_sweep(root, cfg):
    """A sweep folder as the runner lays it out, with made-up results (no training)."""
    os.makedirs(root)
    with open(os.path.join(root, "config.yaml"), "w") as handle:
        yaml.safe_dump(cfg, handle, sort_keys=False)
    for i, (label, variant) in enumerate(expand_customizations(cfg)):
        os.makedirs(os.path.join(root, label))
        with open(os.path.join(root, label, "config.yaml"), "w") as handle:
            yaml.safe_dump(variant, handle, sort_keys=False)
        rows = [result_row("ReferenceNet", 1.0, 3.0 + i, variant["network"]["name"], net) for net in (0, 1)]
        rows += [result_row(m, k, 3.0 + i - 0.1 * (1 - k) + 0.02 * net, variant["network"]["name"], net)
                 for m in ("ThresNet", "FilterThresNet") for k in (0.5, 0.2) for net in (0, 1)]
        write_results_csv(rows, os.path.join(root, label, "results.csv"))
    return root


def test_sweep_labels_say_what_each_customization_changed(in_repo, tmp_path, capsys):
    cfg, expanded = variants("optimizers.yaml")
    root = fake_sweep(str(tmp_path / "sweep"), cfg)
    assert analyze(["sweep", root, "--out", str(tmp_path / "summary")]) == 0
    text = open(tmp_path / "summary" / "sweep.md").read()
    for label in ["training.optimizer=AdamW", "training.optimizer=Adam", "training.optimizerKwargs.lr=0.001",
                  "training.optimizerKwargs.weight_decay=0.001",
                  "training.optimizer=SGD, training.optimizerKwargs.lr=0.01, training.optimizerKwargs.momentum=0.9, "
                  "training.optimizerKwargs.nesterov=True"]:
        assert f"| {label} | WT |" in text and f"| {label} | FT | 80 |" in text, label
    assert "| training.optimizer=Adam | FT | 80 | 20 | 3.93 ± 0.01 | 2/2 |" in text
    with open(tmp_path / "summary" / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 * len(expanded)
    # variants in the customizations' order, not by folder name
    assert list(dict.fromkeys(r["folder"] for r in rows)) == [label for label, _ in expanded]
    # without the base config the labels name the entries in which the variants differ
    os.remove(os.path.join(root, "config.yaml"))
    assert analyze(["sweep", root]) == 0
    text = open(os.path.join(root, "sweep.md")).read()
    assert "| training.optimizer=Adam, training.optimizerKwargs.lr=0.005, " in text


def test_sweep_of_a_tiny_activation_sweep(tiny, torch_single_thread):
    cfg = tiny_config_dict()
    cfg["training"].update(numEpochs=1, datasetKwargs={"num_train": 200, "num_test": 100})
    cfg["experiments"].update(methods=["ThresNet"], spacing=[{"type": "manual", "values": [0.5]}])
    cfg["customizations"] = [{"key": ["network", "name"], "value": "cnf_l2_h16_tanh_high_tol"},
                             {"key": ["network", "name"], "value": "cnf_l2_h16_sigmoid_high_tol"}]
    tiny.cfg = cfg
    assert tiny.run() == 0
    sweep = tiny.path("out")
    assert sorted(name for name in os.listdir(sweep) if not name.startswith(".")) == [
        "config.yaml", "network.name=cnf_l2_h16_sigmoid_high_tol", "network.name=cnf_l2_h16_tanh_high_tol"]
    assert analyze(["sweep", sweep]) == 0
    text = open(os.path.join(sweep, "sweep.md")).read()
    for act in ("tanh", "sigmoid"):
        assert f"| network.name=cnf_l2_h16_{act}_high_tol | WT | 50 |" in text
        assert f"| network.name=cnf_l2_h16_{act}_high_tol | unpruned | 0 |" in text
    with open(os.path.join(sweep, "sweep.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = plt.imread(os.path.join(sweep, "sweep.png"))
    assert min(image.shape[:2]) > 200 and image[..., :3].std() > 0.01


def test_sweep_without_results_is_one_line_and_exit_2(tmp_path, capsys):
    os.makedirs(tmp_path / "empty" / "variant")
    for folder, message in [(tmp_path / "empty", "no subfolder"), (tmp_path / "missing", "not a folder")]:
        assert analyze(["sweep", str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err
