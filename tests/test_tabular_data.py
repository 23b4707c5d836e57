"""MAF tabular datasets: files in the real formats written to tmp_path, checked against an
independent numpy / pandas computation; the archive fallback, missing files and the downloader."""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.data import tabular
from torchprune_flows.data.download import DownloadError, download_maf, main as download_main
from torchprune_flows.data.tabular import Bsds300, Gas, Hepmass, Miniboone, Power

from conftest import REPO_ROOT, SHARED_DATA

try:  # GAS / HEPMASS need pandas, BSDS300 needs h5py; neither is a hard dependency
    import pandas as pd
except ImportError:  # pragma: no cover
    pd = None
try:
    import h5py
except ImportError:  # pragma: no cover
    h5py = None
needs_pandas = pytest.mark.skipif(pd is None, reason="pandas is not installed")
needs_h5py = pytest.mark.skipif(h5py is None, reason="h5py is not installed")

REAL_MINIBOONE = os.path.join(SHARED_DATA, "miniboone", "first_rows.npy")
CLASSES = {"POWER": Power, "GAS": Gas, "HEPMASS": Hepmass, "MINIBOONE": Miniboone, "BSDS300": Bsds300}
FILES = {"POWER": ["power/data.npy"], "GAS": ["gas/ethylene_CO.pickle"],
         "HEPMASS": ["hepmass/1000_train.csv", "hepmass/1000_test.csv"], "MINIBOONE": ["miniboone/data.npy"],
         "BSDS300": ["BSDS300/BSDS300.hdf5"]}


def splits(cls, root, **kwargs):
    return [cls(root=str(root), split=split, **kwargs) for split in ("train", "val", "test")]


def save_npy(root, relative, array):
    path = os.path.join(str(root), *relative.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)
    return path


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_tar(path, members):
    """A gzipped tar with ``{name: bytes}`` members (plus their folder entries)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            folder = os.path.dirname(name)
            if folder:
                info = tarfile.TarInfo(folder + "/")
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return str(path)


def all_files(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def assert_standardised(data, atol=1e-4):
    data = data.double().numpy()
    np.testing.assert_allclose(data.mean(axis=0), 0, atol=atol)
    np.testing.assert_allclose(data.std(axis=0), 1, atol=atol)


# ---------------------------------------------------------------------------------------------
# The five datasets
# ---------------------------------------------------------------------------------------------
def test_power_reproduces_shuffle_column_deletion_noise_and_trainval_zscore(tmp_path):
    n = 123  # test int(12.3) = 12, val int(11.1) = 11, train 100
    raw = np.random.default_rng(0).normal(size=(n, 8)) * np.arange(1, 9) + 10 * np.arange(8)
    save_npy(tmp_path, "power/data.npy", raw)
    train, val, test = splits(Power, tmp_path)
    assert (len(train), len(val), len(test)) == (100, 11, 12)
    assert train.data.shape[1] == Power.dim == 6 and train.data.dtype == torch.float32

    rng = np.random.RandomState(42)
    expected = raw.copy()
    rng.shuffle(expected)
    expected = expected[:, [0, 2, 4, 5, 6, 7]]  # columns 1 and 3 gone
    voltage, gap, sub = 0.01 * rng.rand(n, 1), 0.001 * rng.rand(n, 1), rng.rand(n, 3)
    expected = expected + np.concatenate([gap, voltage, sub, np.zeros((n, 1))], axis=1)
    mu, sd = expected[:111].mean(axis=0), expected[:111].std(axis=0)
    expected = (expected - mu) / sd
    for part, rows in ((train, slice(0, 100)), (val, slice(100, 111)), (test, slice(111, n))):
        np.testing.assert_allclose(part.data.numpy(), expected[rows], rtol=1e-5, atol=1e-5)
    assert_standardised(torch.cat([train.data, val.data]))


@needs_pandas
def test_gas_drops_labels_and_correlated_columns_and_zscores_all_rows(tmp_path):
    rng = np.random.default_rng(1)
    n = 1000
    a, c, e, f = (rng.normal(size=n) for _ in range(4))
    frame = pd.DataFrame({
        "Time": np.arange(n, dtype=float), "Meth": rng.normal(size=n), "Eth": rng.normal(size=n),
        "A": a, "B": a + 0.01 * rng.normal(size=n),  # A ~ B: the first of them (A) goes
        "C": c, "D": -3 * c + 0.02 * rng.normal(size=n),  # corr(C, D) ~ -1: not > 0.98, both stay
        "E": e, "F": 2 * e + 0.05 * rng.normal(size=n), "G": f,  # E ~ F: E goes
    })
    os.makedirs(tmp_path / "gas")
    frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    train, val, test = splits(Gas, tmp_path)
    assert (len(train), len(val), len(test)) == (810, 90, 100)

    kept = frame[["B", "C", "D", "F", "G"]]
    expected = ((kept - kept.mean()) / kept.std(ddof=1)).to_numpy()
    data = torch.cat([train.data, val.data, test.data]).numpy()
    assert data.dtype == np.float32 and data.shape == (n, 5) and Gas.dim == 8
    np.testing.assert_allclose(data, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(test.data.numpy(), expected[900:], atol=1e-5)


@needs_pandas
def test_hepmass_keeps_signal_drops_extra_test_column_and_discrete_features(tmp_path):
    rng = np.random.default_rng(2)

    def frame(n_signal, n_background, extra_column):
        n = n_signal + n_background
        label = rng.permutation(np.repeat([1.0, 0.0], [n_signal, n_background]))
        columns = {"# label": label, "f0": rng.normal(size=n), "f1": rng.normal(size=n) * 3 + 1,
                   "f2": rng.normal(size=n), "f3": rng.choice([-1.0, 0.5, 2.0], size=n),
                   "f4": rng.normal(size=n), "mass": np.full(n, 1000.0)}
        signal = np.flatnonzero(label == 1)
        columns["f2"][signal[:5]] = 0.25  # most frequent value 5 times: kept
        columns["f4"][signal[:6]] = -0.75  # 6 times: dropped
        if extra_column:
            columns["junk"] = rng.normal(size=n)
        return pd.DataFrame(columns)

    train_frame, test_frame = frame(123, 40, False), frame(50, 20, True)
    os.makedirs(tmp_path / "hepmass")
    train_frame.to_csv(tmp_path / "hepmass" / "1000_train.csv", index=False)
    test_frame.to_csv(tmp_path / "hepmass" / "1000_test.csv", index=False)
    train, val, test = splits(Hepmass, tmp_path)
    assert (len(train), len(val), len(test)) == (111, 12, 50)  # val int(12.3) = 12; test = file

    features = ["f0", "f1", "f2"]  # f3 (3 values), f4 (6 repeats), mass, label and junk gone
    signal_train = train_frame[train_frame["# label"] == 1][features].to_numpy()
    signal_test = test_frame[test_frame["# label"] == 1][features].to_numpy()
    mu, sd = signal_train.mean(axis=0), signal_train.std(axis=0, ddof=1)
    expected_train = (signal_train - mu) / sd
    assert train.data.shape[1] == 3 and Hepmass.dim == 21 and test.data.dtype == torch.float32
    np.testing.assert_allclose(torch.cat([train.data, val.data]).numpy(), expected_train, atol=1e-5)
    np.testing.assert_allclose(val.data.numpy(), expected_train[111:], atol=1e-5)
    np.testing.assert_allclose(test.data.numpy(), (signal_test - mu) / sd, atol=1e-5)


def test_miniboone_split_and_trainval_zscore(tmp_path):
    raw = np.random.default_rng(3).gamma(2.0, size=(1000, 43)) * np.arange(1, 44)
    save_npy(tmp_path, "miniboone/data.npy", raw)
    train, val, test = splits(Miniboone, tmp_path)
    assert (len(train), len(val), len(test)) == (810, 90, 100)
    assert train.data.shape[1] == Miniboone.dim == 43
    assert_standardised(torch.cat([train.data, val.data]))
    mu, sd = raw[:900].mean(axis=0), raw[:900].std(axis=0)
    np.testing.assert_allclose(test.data.numpy(), (raw[900:] - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(val.data.numpy(), (raw[810:900] - mu) / sd, rtol=1e-5, atol=1e-5)


@needs_h5py
def test_bsds300_reads_the_hdf5_datasets_unchanged(tmp_path):
    rng = np.random.default_rng(4)
    parts = {"train": rng.random((100, 63)), "validation": rng.random((20, 63)), "test": rng.random((30, 63))}
    os.makedirs(tmp_path / "BSDS300")
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as handle:
        for name, array in parts.items():
            handle.create_dataset(name, data=array.astype(np.float32))
    train, val, test = splits(Bsds300, tmp_path)
    trainval = Bsds300(root=str(tmp_path), train=True)
    for dataset, expected in ((train, parts["train"]), (val, parts["validation"]), (test, parts["test"]),
                              (trainval, np.concatenate([parts["train"], parts["validation"]]))):
        assert dataset.data.dtype == torch.float32 and dataset.data.shape[1] == Bsds300.dim == 63
        np.testing.assert_array_equal(dataset.data.numpy(), expected.astype(np.float32))


def test_items_transform_trainval_view_and_registry(tmp_path):
    raw = np.random.default_rng(5).normal(size=(123, 43))
    save_npy(tmp_path, "miniboone/data.npy", raw)
    train = tf.build_dataset("Miniboone", root=str(tmp_path), train=True, download=False, transform=None,
                             split="train")
    x, y = train[3]
    assert x.shape == (43,) and x.dtype == torch.float32 and int(y) == 0
    doubled = Miniboone(root=str(tmp_path), split="train", transform=lambda v: 2 * v)
    assert torch.equal(doubled[3][0], 2 * x)
    assert len(Miniboone(root=str(tmp_path), train=True)) == 100 + 11  # torchprune's train = train+val
    assert len(Miniboone(root=str(tmp_path), train=False)) == 12
    assert {"Power", "Gas", "Hepmass", "Miniboone", "Bsds300"} <= set(tf.list_entries()["dataset"])
    batch_x, batch_y = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    assert batch_x.shape == (8, 43) and batch_y.tolist() == [0] * 8


def test_preprocessing_is_cached_per_file_version(tmp_path, monkeypatch):
    calls = []
    original = tabular.preprocess_miniboone
    monkeypatch.setattr(tabular, "preprocess_miniboone", lambda raw: calls.append(1) or original(raw))
    path = save_npy(tmp_path, "miniboone/data.npy", np.random.default_rng(6).normal(size=(200, 43)))
    first = splits(Miniboone, tmp_path)
    assert len(calls) == 1
    first[0].data.zero_()  # the datasets own their tensors: the cache is untouched
    np.save(path, np.random.default_rng(7).normal(size=(300, 43)))
    os.utime(path, ns=(1, 1))
    again = splits(Miniboone, tmp_path)
    assert len(calls) == 2 and len(again[2]) == 30
    assert not torch.equal(Miniboone(root=str(tmp_path), split="train").data, first[0].data)


@pytest.mark.skipif(not os.path.isfile(REAL_MINIBOONE), reason="real MINIBOONE rows not available")
def test_real_miniboone_rows(tmp_path):
    raw = np.load(REAL_MINIBOONE)
    assert raw.shape == (1523, 43)
    save_npy(tmp_path, "miniboone/data.npy", raw)
    train, val, test = splits(Miniboone, tmp_path)
    assert (len(train), len(val), len(test)) == (1234, 137, 152)
    for dataset in (train, val, test):
        assert dataset.data.shape[1] == 43 and torch.isfinite(dataset.data).all()
    assert_standardised(torch.cat([train.data, val.data]), atol=2e-4)
    mu, sd = raw[:1371].mean(axis=0), raw[:1371].std(axis=0)
    np.testing.assert_allclose(test.data.numpy(), (raw[1371:] - mu) / sd, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The MAF archive as a fallback, and missing files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("member", ["data/miniboone/data.npy", "miniboone/data.npy", "./data/miniboone/data.npy"])
def test_dataset_is_extracted_from_the_archive(tmp_path, member):
    raw = np.random.default_rng(8).normal(size=(123, 43))
    write_tar(tmp_path / "data.tar.gz", {"data/power/data.npy": b"other", member: npy_bytes(raw)})
    test = Miniboone(root=str(tmp_path), split="test")
    assert len(test) == 12
    assert all_files(tmp_path) == ["data.tar.gz", os.path.join("miniboone", "data.npy")]  # no temp files
    np.testing.assert_array_equal(np.load(tmp_path / "miniboone" / "data.npy"), raw)


@needs_pandas
def test_two_file_dataset_from_the_archive_and_file_dir(tmp_path):
    frames = {}
    for name, n, extra in (("1000_train.csv", 30, []), ("1000_test.csv", 20, ["junk"])):
        data = np.random.default_rng(n).normal(size=(n, 5 + len(extra)))
        data[:, 0] = 1
        columns = ["# label", "f0", "f1", "f2", "f3"] + extra
        frames[name] = pd.DataFrame(data, columns=columns).to_csv(index=False).encode()
    store, root = tmp_path / "store", tmp_path / "root"
    store.mkdir()
    write_tar(store / "data.tar.gz", {f"data/hepmass/{name}": payload for name, payload in frames.items()})
    test = Hepmass(root=str(root), split="test", file_dir=str(store))
    assert test.data.shape == (20, 4)  # the test file's last column dropped
    assert all_files(root) == [os.path.join("hepmass", "1000_test.csv"), os.path.join("hepmass", "1000_train.csv")]


def test_archive_without_the_member_creates_nothing(tmp_path):
    write_tar(tmp_path / "data.tar.gz", {"data/hepmass/1000_train.csv": b"# label,f0\n1,0.5\n"})
    with pytest.raises(FileNotFoundError) as err:
        Hepmass(root=str(tmp_path), split="train")
    message = str(err.value)
    assert "\n" not in message and "hepmass/1000_test.csv" in message and "torchprune_flows.data.download" in message
    assert all_files(tmp_path) == ["data.tar.gz"] and os.listdir(tmp_path) == ["data.tar.gz"]


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_missing_files_raise_one_line_and_create_nothing(tmp_path, name):
    root = tmp_path / "training"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        CLASSES[name](root=str(root), split="test")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{name} data not found")
    for relative in FILES[name]:
        assert os.path.join(str(root), *relative.split("/")) in message
    assert os.path.join(str(root), "data.tar.gz") in message
    assert "python -m torchprune_flows.data.download maf --root " + str(root) in message
    assert os.listdir(root) == []
    with pytest.raises(FileNotFoundError):
        CLASSES[name](root=str(tmp_path / "absent"))
    assert sorted(os.listdir(tmp_path)) == ["training"]


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    """A small MAF-like archive and Zenodo-like metadata, served through file:// URLs."""
    serve = tmp_path / "serve"
    serve.mkdir()
    raw = np.random.default_rng(9).normal(size=(123, 43))
    members = {f"data/{relative}": f"payload of {relative}".encode() for names in FILES.values() for relative in names}
    members["data/miniboone/data.npy"] = npy_bytes(raw)
    members["data/mnist/mnist.pkl.gz"] = b"not needed"
    archive = write_tar(serve / "data.tar.gz", members)
    md5 = hashlib.md5(open(archive, "rb").read()).hexdigest()
    metadata = serve / "record.json"
    metadata.write_text(json.dumps({"files": [{"key": "other.txt", "checksum": "md5:" + "1" * 32},
                                              {"key": "data.tar.gz", "checksum": "md5:" + md5}]}))
    return {"url": (serve / "data.tar.gz").as_uri(), "metadata_url": metadata.as_uri(), "md5": md5,
            "raw": raw, "members": members}


def test_download_verifies_md5_from_metadata_and_extracts(tmp_path, served):
    root = tmp_path / "training"
    paths = download_maf(str(root), url=served["url"], metadata_url=served["metadata_url"], progress=False)
    expected = sorted(os.path.join(*relative.split("/")) for names in FILES.values() for relative in names)
    assert all_files(root) == expected  # archive deleted, no temp files
    assert sorted(os.path.relpath(path, root) for path in paths) == expected
    assert open(root / "gas" / "ethylene_CO.pickle", "rb").read() == b"payload of gas/ethylene_CO.pickle"
    np.testing.assert_array_equal(Miniboone(root=str(root), split="trainval").data.shape, (111, 43))

    kept = tmp_path / "kept"
    download_maf(str(kept), url=served["url"], md5=served["md5"], keep_archive=True, progress=False,
                 metadata_url="file:///nonexistent/record.json")  # --md5 given: metadata not read
    assert "data.tar.gz" in os.listdir(kept)


def test_wrong_md5_leaves_nothing(tmp_path, served):
    root = tmp_path / "training"
    root.mkdir()
    with pytest.raises(DownloadError) as err:
        download_maf(str(root), url=served["url"], md5="0" * 32, progress=False)
    assert "md5 mismatch" in str(err.value) and "\n" not in str(err.value)
    assert os.listdir(root) == []
    bad_metadata = tmp_path / "bad.json"
    bad_metadata.write_text(json.dumps({"files": [{"key": "data.tar.gz", "checksum": "md5:" + "f" * 32}]}))
    with pytest.raises(DownloadError):
        download_maf(str(tmp_path / "new"), url=served["url"], metadata_url=bad_metadata.as_uri(), progress=False)
    assert not os.path.exists(tmp_path / "new")  # the folder this call created is gone again
    with pytest.raises(DownloadError):
        download_maf(str(root), url=(tmp_path / "missing.tar.gz").as_uri(), md5=served["md5"], progress=False)
    assert os.listdir(root) == []


def test_cli(tmp_path, served, capsys):
    root = tmp_path / "training"
    assert download_main(["maf", "--root", str(root), "--url", served["url"], "--md5", "0" * 32]) == 1
    err = capsys.readouterr().err.strip().replace("\r", "\n").splitlines()  # progress bar, then the error
    assert err[-1].startswith("error: md5 mismatch") and sum(line.startswith("error") for line in err) == 1
    assert not os.path.exists(root)
    assert download_main(["maf", "--root", str(root), "--url", served["url"],
                          "--metadata-url", served["metadata_url"], "--keep-archive"]) == 0
    assert os.path.isfile(root / "BSDS300" / "BSDS300.hdf5") and os.path.isfile(root / "data.tar.gz")


def test_module_entry_point(tmp_path, served):
    """``python -m torchprune_flows.data.download``: one error line and exit code 1."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "torchprune_flows.data.download",
                             "maf", "--root", str(tmp_path / "r"), "--url", served["url"], "--md5", "0" * 32],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().replace("\r", "\n").splitlines()
    assert lines[-1].startswith("error: md5 mismatch") and sum(line.startswith("error") for line in lines) == 1
    assert "Warning" not in result.stderr
    assert not os.path.exists(tmp_path / "r")


@needs_pandas
def test_hepmass_test_file_lacking_a_kept_feature_is_an_error():
    train = pd.DataFrame({"# label": [1.0] * 20, "f0": np.arange(20.0), "f1": np.arange(20.0) ** 2})
    test = train.copy()  # no extra column: dropping the last one loses f1
    with pytest.raises(ValueError, match="lacks the feature column.*f1"):
        tabular.preprocess_hepmass(train, test)
