"""Datasets and data loaders for a resolved config."""
import torch
from torch.utils.data import DataLoader

from torchprune_flows.registry import DATASETS

from .transforms import build_transform


def build_splits(cfg):
    """``{"train", "val", "test"}`` datasets of the config's dataset (test: ``datasetTest`` if set)."""
    training = cfg["training"]
    root = cfg["directories"]["training_data"]
    kwargs = dict(training["datasetKwargs"])
    if "seed" in _init_params(DATASETS.get(cfg["network"]["dataset"])):
        kwargs.setdefault("seed", cfg["seed"])

    def make(name, split, transforms):
        cls = DATASETS.get(name)
        transform = build_transform(transforms + training["transformsFinal"])
        return cls(root=root, train=split != "test", download=False, transform=transform, split=split, **kwargs)

    test_name = cfg["experiments"].get("datasetTest") or cfg["network"]["dataset"]
    return {
        "train": make(cfg["network"]["dataset"], "train", training["transformsTrain"]),
        "val": make(cfg["network"]["dataset"], "val", training["transformsTest"]),
        "test": make(test_name, "test", training["transformsTest"]),
    }


def _init_params(cls):
    import inspect

    try:
        return inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}


def build_loaders(splits, tcfg, seed):
    """Loaders; the training loader shuffles with its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    workers = tcfg["numWorkers"]
    return {
        "train": DataLoader(splits["train"], batch_size=tcfg["batchSize"], shuffle=True, drop_last=False,
                            generator=generator, num_workers=workers),
        "val": DataLoader(splits["val"], batch_size=tcfg["testBatchSize"], num_workers=workers),
        "test": DataLoader(splits["test"], batch_size=tcfg["testBatchSize"], num_workers=workers),
    }
