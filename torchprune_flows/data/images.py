"""MNIST and CIFAR-10 read from torchvision's on-disk layouts (no md5 checks, nothing downloaded).

    MNIST:    root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   (each also as .gz)
    CIFAR10:  root/cifar-10-batches-py/{data_batch_1..5, test_batch}     (or root/cifar-10-python.tar.gz)

A gzipped MNIST file is decompressed next to itself, and missing CIFAR-10 batches are extracted
from the archive, both atomically (temporary file, then ``os.replace``). Only the files of the
requested split are needed. Fetch the data with
``python -m torchprune_flows.data.download mnist|cifar10 --root ROOT``.
"""
import os
import pickle

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import register_dataset
from .archive import extract_members, gunzip_next_to, missing_data_message
from .checks import reading
from .splits import carve_validation, resolve_split


def read_idx(path, ndim):
    """A uint8 idx file (big-endian header: magic 0x0000 0x08 ndim, then ndim uint32 sizes)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(f"{path} is not a uint8 idx file with {ndim} dimension(s)")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: the header announces {shape} bytes' worth of data, the file has "
                         f"{len(raw) - header} bytes after it")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy())


class ImageDataset(Dataset):
    """Base class: ``(image, label)`` items over uint8 images ``data`` (N, H, W[, C]).

    torchprune's signature plus ``split`` ("train", "val", "test", "trainval"; see
    :func:`resolve_split`): "test" is the official test set, "trainval" the official training
    set, "train" / "val" its first 90 % / last 10 %. ``num_train`` / ``num_test`` keep only the
    first N training (before carving validation) / test images. ``download`` is ignored (use the
    download CLI); ``file_dir`` is an extra folder searched for an archive (CIFAR-10 only).
    ``transform`` gets a PIL image; without one, items are float tensors (C, H, W) in [0, 1].
    Subclasses set ``name``, ``command`` (the download subcommand) and
    ``load(root, part, file_dir) -> (images, labels)``.
    """

    name = command = ""

    def __init__(self, root="./data/training", train=True, download=False, transform=None, split=None,
                 file_dir=None, num_train=None, num_test=None):
        self.split = resolve_split(train, split)
        self.transform = transform
        self.root = os.path.abspath(os.path.expanduser(str(root)))
        part = "test" if self.split == "test" else "train"
        images, labels = self.load(self.root, part, file_dir)
        limit = num_test if part == "test" else num_train
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        if self.split in ("train", "val"):
            rows = carve_validation(len(images))[0 if self.split == "train" else 1]
            images, labels = images[rows], labels[rows]
        self.data, self.targets = images, labels

    @classmethod
    def load(cls, root, part, file_dir=None):
        raise NotImplementedError

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image, label = self.data[index], int(self.targets[index])
        if self.transform is None:
            image = image.unsqueeze(0) if image.dim() == 2 else image.permute(2, 0, 1)
            return image.float().div_(255.0), label
        from PIL import Image

        return self.transform(Image.fromarray(image.numpy())), label

    def __repr__(self):
        return f"{type(self).__name__}(split={self.split!r}, images={len(self)}, root={self.root!r})"


@register_dataset("MNIST")
class MNIST(ImageDataset):
    """MNIST, 1x28x28 grey images, labels 0-9: 60,000 training, 10,000 test images."""

    name, command, folder = "MNIST", "mnist", "MNIST/raw"
    FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

    @classmethod
    def load(cls, root, part, file_dir=None):
        paths = [os.path.join(root, *cls.folder.split("/"), base) for base in cls.FILES[part]]
        missing = [path for path in paths if not (os.path.isfile(path) or os.path.isfile(path + ".gz"))]
        if missing:
            expected = " and ".join(f"{path} (or {os.path.basename(path)}.gz)" for path in missing)
            raise FileNotFoundError(missing_data_message(cls.name, expected, cls.command, root))
        for path in paths:
            if not os.path.isfile(path):
                with reading(path + ".gz", cls.name, cls.command, root):
                    gunzip_next_to(path + ".gz", path)
        with reading(paths[0], cls.name, cls.command, root):
            images = read_idx(paths[0], 3)
        with reading(paths[1], cls.name, cls.command, root):
            labels = read_idx(paths[1], 1).long()
        if len(images) != len(labels):
            raise ValueError(f"MNIST: {paths[0]} has {len(images)} images but {paths[1]} {len(labels)} labels")
        return images, labels


@register_dataset("CIFAR10")
class CIFAR10(ImageDataset):
    """CIFAR-10, 3x32x32 RGB images, 10 classes: 50,000 training (5 batches), 10,000 test images."""

    name, command, folder, archive = "CIFAR10", "cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz"
    FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

    @classmethod
    def load(cls, root, part, file_dir=None):
        relatives = [f"{cls.folder}/{base}" for base in cls.FILES[part]]
        paths = [os.path.join(root, cls.folder, base) for base in cls.FILES[part]]
        missing = [relative for relative, path in zip(relatives, paths) if not os.path.isfile(path)]
        if missing:
            folders = [root] + ([os.path.abspath(os.path.expanduser(str(file_dir)))] if file_dir else [])
            archives = list(dict.fromkeys(os.path.join(folder, cls.archive) for folder in folders))
            archive = next((path for path in archives if os.path.isfile(path)), None)
            if archive is None:
                absent = [path for path in paths if not os.path.isfile(path)]
                expected = f"{', '.join(absent)} or {' or '.join(archives)}"
                raise FileNotFoundError(missing_data_message(cls.name, expected, cls.command, root))
            extract_members(archive, root, missing, what=cls.name, dataset=cls.command)
        batches = []
        for path in paths:
            with reading(path, cls.name, cls.command, root):
                batches.append(cls.read_batch(path))
        images, labels = zip(*batches)
        return torch.cat(images), torch.cat(labels)

    @staticmethod
    def read_batch(path):
        """One pickled batch: images (N, 32, 32, 3) uint8 and labels (N,) int64."""
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = batch.get(b"labels")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != len(data):
            raise ValueError(f"CIFAR10: {path} is not a batch of (N, 3072) uint8 images with N labels")
        images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        return torch.from_numpy(images), torch.as_tensor(np.asarray(labels), dtype=torch.long)


#: The registered image dataset classes.
IMAGE_DATASETS = (MNIST, CIFAR10)
