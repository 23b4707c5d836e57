"""The dataset contract: every registered dataset (the shipped ones and a plugin's) is built the
way the runner and torchprune build it, and gives seeded, split, consistently shaped items.

File-backed datasets get tiny files in their real formats (``WRITERS``); every other entry,
a plugin's included, must build offline from its arguments alone.
"""
import csv
import glob
import gzip
import inspect
import os
import pickle

import numpy as np
import pytest
import torch

from torchprune_flows.data.images import ImageDataset
from torchprune_flows.data.tabular import TabularDataset
from torchprune_flows.data.toy import ToyDataset
from torchprune_flows.registry import DATASETS
from torchprune_flows.registry.plugins import load_plugins
from torchprune_flows.integrations.torchprune.bridge import _DATASET_BASES

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(HERE, "plugins", "ring_dataset.py")
load_plugins([PLUGIN])  # registers ToyRingPlugin, as --plugin does

#: torchprune's dataset signature plus our split
SIGNATURE = ("root", "train", "download", "transform", "split", "file_dir")


def _npy(root, relative, array):
    path = os.path.join(root, *relative.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)


def _power(root, rng):
    _npy(root, "power/data.npy", rng.normal(size=(200, 8)))


def _miniboone(root, rng):
    _npy(root, "miniboone/data.npy", rng.gamma(2.0, size=(200, 43)))


def _gas(root, rng):
    import pandas as pd

    n = 200
    columns = {"Time": np.arange(n, dtype=float), "Meth": rng.normal(size=n), "Eth": rng.normal(size=n)}
    columns.update({f"c{i}": rng.normal(size=n) for i in range(4)})
    os.makedirs(os.path.join(root, "gas"))
    pd.DataFrame(columns).to_pickle(os.path.join(root, "gas", "ethylene_CO.pickle"))


def _hepmass(root, rng):
    os.makedirs(os.path.join(root, "hepmass"))
    for name, n in (("1000_train.csv", 150), ("1000_test.csv", 60)):
        with open(os.path.join(root, "hepmass", name), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["# label", "f0", "f1", "mass"])
            for _ in range(n):
                writer.writerow([1.0, *rng.normal(size=2), 1000.0])


def _bsds300(root, rng):
    import h5py

    os.makedirs(os.path.join(root, "BSDS300"))
    with h5py.File(os.path.join(root, "BSDS300", "BSDS300.hdf5"), "w") as handle:
        for name, n in (("train", 60), ("validation", 12), ("test", 20)):
            handle.create_dataset(name, data=rng.random((n, 63)).astype(np.float32))


def _idx(array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes() + array.tobytes()


def _mnist(root, rng):
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    for images, labels, n in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 40),
                              ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 20)):
        with gzip.open(os.path.join(raw, images + ".gz"), "wb") as handle:
            handle.write(_idx(rng.integers(0, 256, size=(n, 28, 28))))
        with gzip.open(os.path.join(raw, labels + ".gz"), "wb") as handle:
            handle.write(_idx(rng.integers(0, 10, size=n)))


def _cifar10(root, rng):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": [int(v) for v in rng.integers(0, 10, 8)],
                 b"data": rng.integers(0, 256, size=(8, 3072), dtype=np.uint8)}
        with open(os.path.join(folder, name), "wb") as handle:
            pickle.dump(batch, handle)


#: tiny files in the real format of each file-backed dataset
WRITERS = {"Power": _power, "Miniboone": _miniboone, "Gas": _gas, "Hepmass": _hepmass, "Bsds300": _bsds300,
           "MNIST": _mnist, "CIFAR10": _cifar10}

#: our base classes that the torchprune bridge registers with torchprune's own base classes
BRIDGED_BASES = {(cls.__module__, cls.__name__) for cls in (ToyDataset, TabularDataset)}
#: families torchprune reaches without a bridged base class, and why
UNBRIDGED = {ImageDataset: "torchprune's image sets are torchvision classes with the same signature; "
                           "its runner needs no base class of them"}

NAMES = sorted(DATASETS.names())


def _parameters(cls):
    return inspect.signature(cls).parameters


def _small(cls):
    """Arguments that keep a generated dataset small, where it takes them."""
    params = _parameters(cls)
    return {k: v for k, v in (("num_train", 120), ("num_test", 40)) if k in params}


@pytest.fixture
def data_root(tmp_path):
    return str(tmp_path / "data")


def build(name, root, **kwargs):
    """The dataset ``name`` as the runner builds it (``runner/data.py``), files written first."""
    cls = DATASETS.get(name)
    if name in WRITERS and not os.path.isdir(root):
        os.makedirs(root)
        WRITERS[name](root, np.random.default_rng(0))
    kwargs = {**_small(cls), **kwargs}
    return cls(root=root, download=False, transform=None, **kwargs)


def items(dataset, count=8):
    return [dataset[i] for i in range(min(count, len(dataset)))]


def test_the_plugin_and_every_shipped_family_are_covered():
    assert "ToyRingPlugin" in NAMES
    assert set(WRITERS) <= set(NAMES)
    for name in NAMES:
        cls = DATASETS.get(name)
        assert name in WRITERS or not issubclass(cls, (TabularDataset, ImageDataset)), \
            f"{name} reads files: add a writer of its format to WRITERS"


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_torchprunes_plus_split(name):
    params = _parameters(DATASETS.get(name))
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert takes_any or set(SIGNATURE) <= set(params), f"{name} lacks {set(SIGNATURE) - set(params)}"


@pytest.mark.parametrize("name", NAMES)
def test_splits_give_consistent_items(name, data_root):
    parts = {split: build(name, data_root, train=split != "test", split=split) for split in ("train", "val", "test")}
    shapes = set()
    for split, dataset in parts.items():
        assert len(dataset) > 0, f"{name} {split} is empty"
        for x, y in items(dataset):
            assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and torch.isfinite(x).all()
            assert int(y) == y
            shapes.add(tuple(x.shape))
    assert len(shapes) == 1, f"{name}: item shapes differ between splits: {shapes}"
    # torchprune's view: train=True without a split is train + validation
    trainval = build(name, data_root, train=True)
    assert len(trainval) == len(parts["train"]) + len(parts["val"])
    test = build(name, data_root, train=False)
    assert len(test) == len(parts["test"])


@pytest.mark.parametrize("name", NAMES)
def test_same_arguments_same_data(name, data_root):
    first = items(build(name, data_root, split="train"))
    again = items(build(name, data_root, split="train"))
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and int(y1) == int(y2)


@pytest.mark.parametrize("name", [n for n in NAMES if "seed" in _parameters(DATASETS.get(n))])
def test_the_seed_picks_the_data(name, data_root):
    zero = torch.stack([x for x, _ in items(build(name, data_root, split="train", seed=0))])
    one = torch.stack([x for x, _ in items(build(name, data_root, split="train", seed=1))])
    assert not torch.equal(zero, one)


@pytest.mark.parametrize("name", [n for n in NAMES if n in WRITERS])
def test_file_datasets_name_the_missing_files(name, tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    with pytest.raises(FileNotFoundError) as err:
        DATASETS.get(name)(root=empty, train=True, download=False, transform=None, split="train")
    message = str(err.value)
    assert "\n" not in message and empty in message
    assert glob.glob(os.path.join(empty, "**", "*"), recursive=True) == []  # nothing half-written


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(DATASETS.get(n), TabularDataset)])
def test_tabular_files_are_found_in_file_dir(name, tmp_path):
    """torchprune hands its ``directories.training_data`` over as ``file_dir``."""
    files = str(tmp_path / "files")
    os.makedirs(files)
    WRITERS[name](files, np.random.default_rng(0))
    elsewhere = DATASETS.get(name)(root=str(tmp_path / "root"), train=True, download=False, transform=None,
                                   split="test", file_dir=files)
    direct = build(name, files, split="test")
    assert torch.equal(elsewhere.data, direct.data)


@pytest.mark.parametrize("name", NAMES)
def test_torchprune_sees_every_dataset_through_a_bridged_base(name):
    cls = DATASETS.get(name)
    assert set(_DATASET_BASES) == BRIDGED_BASES
    bridged = any((base.__module__, base.__name__) in BRIDGED_BASES for base in cls.__mro__)
    assert bridged or any(issubclass(cls, base) for base in UNBRIDGED), \
        f"{name} derives from no base class the torchprune bridge knows; add it to UNBRIDGED with the reason"


def test_the_runner_trains_on_the_plugin_dataset(tiny_experiment_class, tmp_path, torch_single_thread):
    exp = tiny_experiment_class(tmp_path)
    exp.cfg["network"]["dataset"] = "ToyRingPlugin"
    exp.cfg["training"]["numEpochs"] = 1
    exp.cfg["experiments"]["methods"] = ["FilterThresNet"]
    exp.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    assert exp.run("--plugin", PLUGIN) == 0
    with open(os.path.join(exp.path("out"), "results.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["dataset"] for r in rows} == {"ToyRingPlugin"} and len(rows) == 2
    assert all(np.isfinite(float(r["test_loss"])) for r in rows)
