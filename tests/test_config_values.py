"""Every config value is checked before anything is written (issue 12): optimizer and scheduler
keyword arguments against the torch classes' signatures, solver options of every network family."""
import os

import pytest

from conftest import one_error_line


@pytest.mark.parametrize("section, change, words", [
    ("training", {"optimizerKwargs": {"lr": "fast"}}, ["training.optimizerKwargs.lr", "'fast'"]),
    ("training", {"optimizerKwargs": {"lrr": 0.01}}, ["unknown key 'training.optimizerKwargs.lrr' for AdamW",
                                                      "did you mean 'lr'"]),
    ("training", {"lrSchedulers": [{"type": "MultiStepLR", "kwargs": {"gama": 0.3},
                                    "stepKwargs": {"milestones": [1]}}]},
     ["unknown key 'training.lrSchedulers[0].kwargs.gama' for MultiStepLR", "did you mean 'gamma'"]),
    ("retraining", {"optimizerKwargs": {"weight_decay": True}}, ["retraining.optimizerKwargs.weight_decay"]),
    ("network", {"kwargs": {"seminorm": "no"}}, ["seminorm", "must be true or false", "'no'"]),
    ("network", {"kwargs": {"atol": -1}}, ["atol", "must be a positive number", "-1"]),
    ("network", {"kwargs": {"atoll": 1e-3}}, ["network.kwargs.atoll", "did you mean atol"]),
])
def test_bad_values_stop_before_anything_is_written(tiny, capsys, section, change, words):
    tiny.cfg.setdefault(section, {}).update(change)
    assert tiny.run() == 2
    one_error_line(capsys, *words)
    assert not os.path.exists(tiny.path("out"))  # no config.yaml locking the folder to a bad config


def test_good_values_pass(tiny):
    tiny.cfg["training"]["optimizerKwargs"] = {"lr": 1e-2, "betas": [0.9, 0.99], "amsgrad": True}
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    tiny.cfg["network"]["kwargs"] = {"atol": 1e-3, "rtol": 1e-3, "seminorm": False}
    assert tiny.run() == 0


def test_plugin_factory_kwargs_are_checked_against_its_signature(tiny, capsys, monkeypatch, clean_modules):
    with open(tiny.path("kw_plugin_flows.py"), "w") as handle:
        handle.write(
            "import torchprune_flows as tf\n\n\n"
            "@tf.register_network('kw_strict_flow')\n"
            "def strict(num_classes=2, num_in_channels=None, hidden=8):\n"
            "    return tf.build_network(f'cnf_l2_h{hidden}_tanh_high_tol', num_classes=num_classes)\n\n\n"
            "@tf.register_network('kw_loose_flow')\n"
            "def loose(num_classes=2, **kwargs):\n"
            "    return tf.build_network('cnf_l2_h8_tanh_high_tol', num_classes=num_classes)\n")
    monkeypatch.syspath_prepend(tiny.root)
    clean_modules.append("kw_plugin_flows")
    tiny.cfg["plugins"] = ["kw_plugin_flows"]
    tiny.cfg["network"].update(name="kw_strict_flow", kwargs={"hiden": 4})
    assert tiny.run() == 2
    one_error_line(capsys, "unknown option 'network.kwargs.hiden' for kw_strict_flow", "did you mean hidden")
    tiny.cfg["network"].update(name="kw_loose_flow", kwargs={"hiden": 4})
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    assert tiny.run() == 0
    assert "warning: network.kwargs ['hiden'] go to kw_plugin_flows.loose(**kwargs)" in capsys.readouterr().err
