"""The paper's tabular and image configs run end to end on the real data available offline.

MINIBOONE: the real first 1,523 rows as ``miniboone/data.npy``. MNIST: the real test split, also
copied under the training file names (the training images are not available offline). Networks
are narrowed and tolerances loosened through ``--set`` so that each run takes seconds.
"""
import csv
import math
import os
import shutil

import numpy as np
import pytest

from conftest import SHARED_DATA

SHARED = SHARED_DATA


def _run(config, out, *overrides):
    from torchprune_flows.runner.cli import main

    return main([os.path.join("experiment_configs", config), "--out", out,
                 *[arg for o in overrides for arg in ("--set", o)]])


def _rows(out):
    with open(os.path.join(out, "results.csv")) as handle:
        return list(csv.DictReader(handle))


def _check_sweep(out, keeps):
    rows = _rows(out)
    assert {(r["method"], round(float(r["keep_ratio"]), 3)) for r in rows} == (
        {("ReferenceNet", 1.0)} | {(m, k) for m in ("FilterThresNet", "ThresNet") for k in keeps})
    for row in rows:
        assert row["converged"] == "True"
        assert math.isfinite(float(row["test_loss"]))
        assert float(row["nfe_forward"]) > 0 and float(row["nfe_backward"]) > 0
    return rows


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_miniboone_config_on_the_real_rows(tmp_path, in_repo):
    rows_file = os.path.join(SHARED, "miniboone", "first_rows.npy")
    if not os.path.exists(rows_file):
        pytest.skip("real MINIBOONE rows not available")
    os.makedirs(tmp_path / "data" / "miniboone")
    np.save(tmp_path / "data" / "miniboone" / "data.npy", np.load(rows_file))
    out = str(tmp_path / "out")
    rc = _run("ffjord/miniboone.yaml", out, f"directories.training_data={tmp_path / 'data'}",
              "network.name=ffjord_l1_hm1_f1_softplus", "network.kwargs={atol: 1.0e-3, rtol: 1.0e-3}",
              "training.numEpochs=1", "training.batchSize=700", "experiments.numNets=1",
              "experiments.spacing=[{type: manual, values: [0.5, 0.25]}]")
    assert rc == 0
    rows = _check_sweep(out, [0.5, 0.25])
    # NLL in nats of 43-dimensional z-scored data: near the standard normal's 61 nats after one epoch
    assert all(30 < float(r["test_loss"]) < 120 for r in rows)
    assert "NLL (nats)" in open(os.path.join(out, "report.md")).read()


def test_mnist_config_on_the_real_test_images(tmp_path, in_repo):
    if not os.path.exists(os.path.join(SHARED, "mnist", "t10k-images-idx3-ubyte.gz")):
        pytest.skip("real MNIST test split not available")
    raw = tmp_path / "data" / "MNIST" / "raw"
    os.makedirs(raw)
    for kind in ("images-idx3", "labels-idx1"):
        source = os.path.join(SHARED, "mnist", f"t10k-{kind}-ubyte.gz")
        shutil.copy(source, raw / f"t10k-{kind}-ubyte.gz")
        shutil.copy(source, raw / f"train-{kind}-ubyte.gz")  # the real test images stand in for training
    out = str(tmp_path / "out")
    rc = _run("ffjord/mnist.yaml", out, f"directories.training_data={tmp_path / 'data'}",
              "network.kwargs={hidden: [4, 4], atol: 1.0e-2, rtol: 1.0e-2}",
              "training.datasetKwargs={num_train: 40, num_test: 10}", "training.batchSize=18",
              "training.numEpochs=1", "experiments.spacing=[{type: manual, values: [0.5]}]")
    assert rc == 0
    rows = _check_sweep(out, [0.5])
    # bits/dim: a near-zero vector field leaves the logit transform alone, about 26 bits/dim on MNIST
    assert all(0.5 < float(r["test_loss"]) < 40 for r in rows)
    report = open(os.path.join(out, "report.md")).read()
    assert "bits/dim" in report


@pytest.mark.parametrize("config,expected", [("ffjord/miniboone.yaml", "miniboone/data.npy"),
                                             ("ffjord/power.yaml", "power/data.npy"),
                                             ("ffjord/mnist.yaml", "MNIST/raw"),
                                             ("ffjord/cifar10.yaml", "cifar-10-batches-py")])
def test_missing_data_is_one_line_before_anything_is_written(tmp_path, in_repo, capsys, config, expected):
    out = tmp_path / "out"
    rc = _run(config, str(out), f"directories.training_data={tmp_path / 'empty'}")
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error:") and "\n" not in err
    assert expected in err and "torchprune_flows.data.download" in err
    assert not out.exists() and not (tmp_path / "empty").exists()
