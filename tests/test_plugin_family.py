"""A vector-field family added by a plugin file, as the README's "Adding your own flow" shows it:
the README's code is the plugin file, the runner trains and prunes it (WT and FT), and
tests/test_network_contract.py runs the family contract on its example."""
import csv
import os
import re

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(HERE, "plugins", "my_flows.py")
README = os.path.join(os.path.dirname(HERE), "README.md")


def test_the_readme_example_is_the_plugin_file():
    with open(README) as handle:
        readme = handle.read()
    blocks = re.findall(r"```python\n(# my_flows.py\n.*?)```", readme, re.S)
    assert len(blocks) == 1
    with open(PLUGIN) as handle:
        assert blocks[0] == handle.read()


def test_the_runner_trains_and_prunes_the_plugin_family(tiny_experiment_class, tmp_path, torch_single_thread):
    exp = tiny_experiment_class(tmp_path)
    exp.cfg["network"]["name"] = "myflow_h16"  # a member the plugin never listed as an example
    exp.cfg["training"]["numEpochs"] = 2
    exp.cfg["experiments"]["methods"] = ["ThresNet", "FilterThresNet"]
    exp.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    assert exp.run("--plugin", PLUGIN) == 0
    with open(os.path.join(exp.path("out"), "results.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["network"] for r in rows} == {"myflow_h16"}
    assert sorted(r["method"] for r in rows) == ["FilterThresNet", "ReferenceNet", "ThresNet"]
    original = 2 * 16 + 16 + 16 * 2 + 2  # the two Linear layers of the 2-D field
    for row in rows:
        assert int(row["params_original"]) == original
        assert np.isfinite(float(row["test_loss"]))
        if row["method"] != "ReferenceNet":
            assert abs(int(row["params"]) / original - 0.5) < 0.1
