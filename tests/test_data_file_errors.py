"""Data files that exist but are unusable stop the runner with one line naming the file."""
import gzip
import os

import numpy as np
import pytest

from torchprune_flows.data.checks import DataFileError
from torchprune_flows.data.images import MNIST
from torchprune_flows.data.tabular import Miniboone, clear_cache


def _miniboone(root, array=None, raw=None):
    folder = root / "miniboone"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.npy"
    if raw is not None:
        path.write_bytes(raw)
    else:
        np.save(path, array)
    clear_cache()
    return str(path)


def _good_rows(n=40, width=43, seed=0):
    return np.random.default_rng(seed).normal(size=(n, width))


@pytest.mark.parametrize("case, expected", [
    ("truncated", r"cannot read the MINIBOONE file .*data\.npy \(ValueError: .*\): it is truncated or corrupt; "
                  r"delete it and get it again \('python -m torchprune_flows\.data\.download maf --root "),
    ("empty", r"cannot read the MINIBOONE file .*data\.npy \(EOFError"),
    ("42 columns", r"the MINIBOONE file .*data\.npy has 42 columns; MINIBOONE has 43"),
    ("5 rows", r"the MINIBOONE file .*data\.npy has 5 rows, too few for the train/validation/test split "
               r"\(at least 11\)"),
    ("nan row", r"the MINIBOONE file .*data\.npy holds non-finite values \(NaN or inf\) in 2 of its 40 rows, "
                r"the first at row 7"),
])
def test_unusable_miniboone_files_are_named(tmp_path, case, expected):
    if case == "truncated":
        full = tmp_path / "full.npy"
        np.save(full, _good_rows())
        _miniboone(tmp_path, raw=full.read_bytes()[:-100])
    elif case == "empty":
        _miniboone(tmp_path, raw=b"")
    elif case == "42 columns":
        _miniboone(tmp_path, _good_rows(width=42))
    elif case == "5 rows":
        _miniboone(tmp_path, _good_rows(n=5))
    else:
        rows = _good_rows()
        rows[7, 3], rows[20, 0] = np.nan, np.inf
        _miniboone(tmp_path, rows)
    with pytest.raises(DataFileError, match=expected) as err:
        Miniboone(root=str(tmp_path), split="train")
    assert "\n" not in str(err.value)


def test_good_miniboone_rows_still_load(tmp_path):
    _miniboone(tmp_path, _good_rows())
    assert Miniboone(root=str(tmp_path), split="test").data.shape == (4, 43)


def test_a_corrupt_mnist_archive_is_named(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for base in MNIST.FILES["test"]:
        (folder / (base + ".gz")).write_bytes(gzip.compress(bytes(range(256)) * 4)[:40])
    with pytest.raises(DataFileError, match=r"cannot read the MNIST file .*t10k-images-idx3-ubyte\.gz .*truncated "
                                            r"or corrupt; delete it and get it again \('python -m "
                                            r"torchprune_flows\.data\.download mnist"):
        MNIST(root=str(tmp_path), split="test")
    assert not os.path.exists(folder / MNIST.FILES["test"][0])  # nothing half-written


def test_the_runner_reports_a_corrupt_data_file_in_one_line(tiny, capsys):
    tiny.cfg["network"] = {"name": "ffjord_l1_hm1_f1_tanh_high_tol", "dataset": "Miniboone", "outputSize": 43}
    tiny.cfg["training"]["loss"] = "NLLNatsLoss"
    tiny.cfg["training"]["metricsTest"] = [{"type": "NLLNats", "kwargs": {}}, {"type": "Dummy", "kwargs": {}}]
    tiny.cfg["training"].pop("datasetKwargs")
    tiny.cfg["directories"] = {"training_data": tiny.path("data")}
    rows = _good_rows()
    rows[3, 1] = np.nan
    os.makedirs(tiny.path("data"))
    _miniboone(__import__("pathlib").Path(tiny.path("data")), rows)
    assert tiny.run() == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: the MINIBOONE file ") and "the first at row 3" in line
    assert not os.path.exists(tiny.path("out"))
