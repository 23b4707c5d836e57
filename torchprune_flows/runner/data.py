"""Datasets and data loaders for a resolved config."""
import torch
from torch.utils.data import DataLoader

from torchprune_flows.registry import DATASETS

from .transforms import build_transform


def build_split(cfg, split):
    """The config's dataset for ``split`` ("train", "val" or "test"; test: ``datasetTest`` if set)."""
    training = cfg["training"]
    name = cfg["network"]["dataset"]
    if split == "test":
        name = cfg["experiments"].get("datasetTest") or name
    kwargs = dict(training["datasetKwargs"])
    if "seed" in _init_params(DATASETS.get(cfg["network"]["dataset"])):
        kwargs.setdefault("seed", cfg["seed"])
    transforms = training["transformsTrain"] if split == "train" else training["transformsTest"]
    transform = build_transform(transforms + training["transformsFinal"])
    return DATASETS.get(name)(root=cfg["directories"]["training_data"], train=split != "test", download=False,
                              transform=transform, split=split, **kwargs)


def build_splits(cfg):
    """``{"train", "val", "test"}`` datasets of the config (see :func:`build_split`)."""
    return {split: build_split(cfg, split) for split in ("train", "val", "test")}


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
