"""MNIST and CIFAR-10: the real MNIST test files when present, small files in the real formats
written to tmp_path otherwise; the .gz / archive fallbacks, missing files, the download CLI."""
import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
from torchvision import transforms as tv

from torchprune_flows.runner.transforms import RandomNoise, build_transform
from torchprune_flows.data.download import main as download_main
from torchprune_flows.data.images import CIFAR10, MNIST
from torchprune_flows.registry import DATASETS

from conftest import SHARED_DATA

REAL_MNIST = os.path.join(SHARED_DATA, "mnist")
REAL_FILES = {"t10k-images-idx3-ubyte.gz": "9fb629c4", "t10k-labels-idx1-ubyte.gz": "ec29112d"}


def all_files(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def idx_bytes(array):
    """``array`` (uint8) in the idx format: 0, 0, 0x08, ndim, big-endian uint32 sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes() + array.tobytes()


def write_mnist_train(root, n=50, seed=0):
    """Synthetic MNIST training files: images uncompressed, labels gzipped."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    raw = os.path.join(str(root), "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    with open(os.path.join(raw, "train-images-idx3-ubyte"), "wb") as handle:
        handle.write(idx_bytes(images))
    with gzip.open(os.path.join(raw, "train-labels-idx1-ubyte.gz"), "wb") as handle:
        handle.write(idx_bytes(labels))
    return images, labels


def cifar_batches(sizes=(4, 4, 4, 4, 4, 6), seed=0):
    """``{name: pickled batch}`` for data_batch_1..5 and test_batch with the given sizes."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for name, n in zip(names, sizes):
        batches[name] = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                         b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
    return batches


def write_cifar(root, batches):
    folder = os.path.join(str(root), "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for name, batch in batches.items():
        with open(os.path.join(folder, name), "wb") as handle:
            pickle.dump(batch, handle)


def write_cifar_archive(path, batches):
    with tarfile.open(str(path), "w:gz") as tar:
        members = {name: pickle.dumps(batch) for name, batch in batches.items()}
        members["batches.meta"] = pickle.dumps({b"label_names": [b"x"] * 10})
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_mnist_root(tmp_path_factory):
    """The real MNIST test files copied (as .gz) into ``root/MNIST/raw``."""
    if not all(os.path.isfile(os.path.join(REAL_MNIST, name)) for name in REAL_FILES):
        pytest.skip(f"the real MNIST test files are not in {REAL_MNIST}")
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in REAL_FILES:
        shutil.copyfile(os.path.join(REAL_MNIST, name), raw / name)
    return root


def test_real_mnist_test_split(real_mnist_root):
    root = real_mnist_root
    for name, prefix in REAL_FILES.items():  # the real files, not stand-ins
        assert hashlib.md5((root / "MNIST" / "raw" / name).read_bytes()).hexdigest().startswith(prefix)
    data = MNIST(root=root, split="test")  # decompresses next to the .gz, needs no train files
    assert all_files(root) == [os.path.join("MNIST", "raw", name) for name in
                               ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
                                "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz")]
    assert len(data) == 10000 and data.data.shape == (10000, 28, 28) and data.data.dtype == torch.uint8
    images, labels = zip(*(data[i] for i in range(len(data))))
    images = torch.stack(images)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == 0 and images.max() == 1
    assert torch.equal(images, data.data.unsqueeze(1).float() / 255)
    assert all(type(label) is int for label in labels) and sorted(set(labels)) == list(range(10))
    assert MNIST(root=root, train=False).data.shape == (10000, 28, 28)  # torchprune's flag

    small = MNIST(root=root, split="test", num_test=100)
    assert len(small) == 100 and torch.equal(small.data, data.data[:100])


def test_real_mnist_dequantisation(real_mnist_root):
    transform = build_transform([{"type": "ToTensor"}, {"type": "RandomNoise", "kwargs": {"normalization": 255.0}}])
    data = MNIST(root=real_mnist_root, split="test", transform=transform, num_test=3000)  # ~0.2 ms an image
    torch.manual_seed(0)
    noisy = torch.stack([data[i][0] for i in range(len(data))]).double()
    assert noisy.shape == (3000, 1, 28, 28)
    k = data.data.unsqueeze(1).double()  # 255 x, the undequantised pixel in 0..255
    eps = 1e-6  # float32 rounding of (255 x + u) / 256
    assert bool((noisy >= k / 256 - eps).all()) and bool((noisy < (k + 1) / 256 + eps).all())
    offset = noisy * 256 - k  # the noise u
    assert (offset.floor() == 0).double().mean() > 0.999 and abs(offset.mean().item() - 0.5) < 0.01

    from PIL import Image

    torch.manual_seed(0)  # the same draw as the first item above, through the transforms by hand
    single = RandomNoise(255.0)(tv.ToTensor()(Image.fromarray(data.data[0].numpy())))
    assert torch.equal(single.double(), noisy[0])


def test_mnist_train_splits_from_written_idx_files(tmp_path):
    images, labels = write_mnist_train(tmp_path)
    sizes = {split: len(MNIST(root=tmp_path, split=split)) for split in ("train", "val", "trainval")}
    assert sizes == {"train": 45, "val": 5, "trainval": 50}
    assert len(MNIST(root=tmp_path, train=True)) == 50  # torchprune's flag: train + val

    trainval, val = MNIST(root=tmp_path, split="trainval"), MNIST(root=tmp_path, split="val")
    written = torch.from_numpy(images).unsqueeze(1).float() / 255
    assert torch.equal(torch.stack([trainval[i][0] for i in range(50)]), written)
    assert [trainval[i][1] for i in range(50)] == labels.tolist()
    assert torch.equal(val[0][0], written[45]) and val[4][1] == int(labels[49])
    assert sorted(os.listdir(tmp_path / "MNIST" / "raw")) == [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"]

    few = {split: MNIST(root=tmp_path, split=split, num_train=20) for split in ("train", "val")}
    assert (len(few["train"]), len(few["val"])) == (18, 2)
    assert torch.equal(few["val"].data, torch.from_numpy(images[18:20]))

    with pytest.raises(FileNotFoundError):  # the test files were never written
        MNIST(root=tmp_path, split="test")

    batch, targets = next(iter(torch.utils.data.DataLoader(trainval, batch_size=8)))
    assert batch.shape == (8, 1, 28, 28) and targets.dtype == torch.int64


def test_mnist_rejects_a_truncated_idx_file(tmp_path):
    write_mnist_train(tmp_path, n=5)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        MNIST(root=tmp_path, split="train")


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
def test_cifar10_pixels_labels_and_splits(tmp_path):
    batches = cifar_batches()
    write_cifar(tmp_path, batches)
    train_rows = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    sizes = {split: len(CIFAR10(root=tmp_path, split=split)) for split in ("train", "val", "trainval", "test")}
    assert sizes == {"train": 18, "val": 2, "trainval": 20, "test": 6}

    data = CIFAR10(root=tmp_path, split="trainval")
    assert data.data.shape == (20, 32, 32, 3) and data.data.dtype == torch.uint8
    for n in (0, 7, 19):
        image, label = data[n]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == train_labels[n]
        for c, i, j in ((0, 0, 0), (1, 5, 17), (2, 31, 31), (0, 31, 0), (2, 0, 31)):
            assert image[c, i, j].item() == pytest.approx(train_rows[n, c * 1024 + i * 32 + j] / 255)
        expected = torch.from_numpy(train_rows[n].reshape(3, 32, 32).astype(np.float32)) / 255
        assert torch.equal(image, expected)
    test = CIFAR10(root=tmp_path, train=False)
    assert [test[i][1] for i in range(6)] == batches["test_batch"][b"labels"]
    val = CIFAR10(root=tmp_path, split="val")
    assert torch.equal(val[1][0], data[19][0])
    few = CIFAR10(root=tmp_path, split="train", num_train=10)
    assert len(few) == 9 and len(CIFAR10(root=tmp_path, split="test", num_test=3)) == 3

    flip = tv.Compose([tv.RandomHorizontalFlip(p=1.0), tv.ToTensor()])
    flipped = CIFAR10(root=tmp_path, split="trainval", transform=flip)
    plain = CIFAR10(root=tmp_path, split="trainval", transform=tv.ToTensor())
    assert torch.equal(plain[3][0], data[3][0])  # ToTensor on the PIL image = the default tensor
    assert torch.equal(flipped[3][0], data[3][0].flip(-1)) and flipped[3][1] == train_labels[3]


def test_cifar10_from_the_archive(tmp_path):
    batches = cifar_batches(sizes=(2, 2, 2, 2, 2, 3))
    root = tmp_path / "training"
    root.mkdir()
    write_cifar_archive(root / "cifar-10-python.tar.gz", batches)
    test = CIFAR10(root=root, split="test")  # extracts just the test batch
    assert all_files(root) == ["cifar-10-batches-py/test_batch", "cifar-10-python.tar.gz"]
    assert len(test) == 3 and torch.equal(test.data[0].permute(2, 0, 1).reshape(-1),
                                          torch.from_numpy(batches["test_batch"][b"data"][0]))
    assert len(CIFAR10(root=root, split="trainval")) == 10
    assert len(all_files(root)) == 7  # 6 batches + the archive, no temporary files

    other = tmp_path / "other"  # archive found through file_dir
    assert len(CIFAR10(root=other, split="val", file_dir=root)) == 1
    assert len(all_files(other)) == 5


def test_cifar10_archive_lacking_a_batch(tmp_path):
    batches = cifar_batches(sizes=(2, 2, 2, 2, 2, 3))
    del batches["data_batch_3"]
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    with pytest.raises(FileNotFoundError) as err:
        CIFAR10(root=tmp_path, split="train")
    assert "data_batch_3" in str(err.value) and "download cifar10" in str(err.value)
    assert all_files(tmp_path) == ["cifar-10-python.tar.gz"]  # nothing half-extracted


# --------------------------------------------------------------------------------------------
# Missing files, registry
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, split, expected", [
    (MNIST, "test", ["MNIST/raw/t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
                     "MNIST/raw/t10k-labels-idx1-ubyte"]),
    (MNIST, "val", ["MNIST/raw/train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz"]),
    (CIFAR10, "test", ["cifar-10-batches-py/test_batch", "cifar-10-python.tar.gz"]),
    (CIFAR10, "train", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_5",
                        "cifar-10-python.tar.gz"]),
])
def test_missing_files_name_paths_and_the_fix(tmp_path, cls, split, expected):
    root = tmp_path / "training"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        cls(root=root, split=split)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{cls.__name__} data not found")
    for part in expected:
        assert part.replace("/", os.sep) in message
    command = f"python -m torchprune_flows.data.download {cls.command} --root {root}"
    assert command in message and "directories.training_data" in message
    assert os.listdir(root) == []
    with pytest.raises(FileNotFoundError):
        cls(root=tmp_path / "absent", split=split)
    assert not os.path.exists(tmp_path / "absent")


def test_registered():
    assert DATASETS.get("MNIST") is MNIST and DATASETS.get("CIFAR10") is CIFAR10


# --------------------------------------------------------------------------------------------
# Download CLI (torchvision's dataset classes replaced: no network)
# --------------------------------------------------------------------------------------------
class FakeTorchvisionDataset:
    calls = []
    fail = False

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((type(self).__name__, root, train, download))
        if type(self).fail:
            raw = os.path.join(root, "MNIST", "raw")
            os.makedirs(raw, exist_ok=True)
            open(os.path.join(raw, "train-images-idx3-ubyte.gz"), "wb").close()  # a partial download
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\n"
                               "<urlopen error [Errno -2] Name or service not known>\n")


@pytest.fixture
def fake_torchvision(monkeypatch):
    import torchvision.datasets

    fakes = {name: type(name, (FakeTorchvisionDataset,), {"calls": [], "fail": False})
             for name in ("MNIST", "CIFAR10")}
    for name, fake in fakes.items():
        monkeypatch.setattr(torchvision.datasets, name, fake)
    return fakes


def test_download_cli_uses_torchvision(tmp_path, fake_torchvision, capsys):
    root = tmp_path / "training"
    assert download_main(["mnist", "--root", str(root)]) == 0
    assert fake_torchvision["MNIST"].calls == [("MNIST", str(root), True, True), ("MNIST", str(root), False, True)]
    assert download_main(["cifar10", "--root", str(root)]) == 0
    assert fake_torchvision["CIFAR10"].calls == [("CIFAR10", str(root), True, True)]
    out = capsys.readouterr().out
    assert os.path.join(str(root), "MNIST", "raw") in out and os.path.join(str(root), "cifar-10-batches-py") in out


def test_download_cli_network_error(tmp_path, fake_torchvision, capsys):
    fake_torchvision["MNIST"].fail = True
    root = tmp_path / "training"
    assert download_main(["mnist", "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: download of MNIST") and "Name or service" in err[0]
    assert not os.path.exists(root)  # the partial file and the folders this call created are gone

    kept = tmp_path / "kept" / "MNIST" / "raw"
    kept.mkdir(parents=True)
    (kept / "t10k-labels-idx1-ubyte").write_bytes(b"old")
    assert download_main(["mnist", "--root", str(tmp_path / "kept")]) == 1
    assert all_files(tmp_path / "kept") == [os.path.join("MNIST", "raw", "t10k-labels-idx1-ubyte")]
