"""The registries of networks, datasets, losses and metrics, and their decorators.

    from torchprune_flows.registry import register_network

    @register_network("my_flow")
    def my_flow(num_classes, **kwargs):
        ...

Families are registered with a template (see :mod:`.core`), e.g.
``register_network("ffjord_l{layers:d}_h{hidden:d}_{activation}[_{suffix:*}]")``.
"""
from .core import Registry, UnknownNameError
from .plugins import ENTRY_POINT_GROUP, PluginImportError, load_entry_point_plugins, load_plugins

NETWORKS = Registry("network")
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
METRICS = Registry("metric")
REGISTRIES = {"network": NETWORKS, "dataset": DATASETS, "loss": LOSSES, "metric": METRICS}


def register_network(name):
    """Decorator: register a network factory ``f(num_classes, **kwargs) -> nn.Module``."""
    return NETWORKS.register(name)


def register_dataset(name):
    """Decorator: register a dataset class ``cls(root, train, download, transform, ...)``."""
    return DATASETS.register(name)


def register_loss(name):
    """Decorator: register a loss class ``cls(**lossKwargs)``; ``loss(outputs, targets)``."""
    return LOSSES.register(name)


def register_metric(name):
    """Decorator: register a metric class ``cls(output_size, **kwargs)`` (higher is better)."""
    return METRICS.register(name)


def build_network(name, **kwargs):
    return NETWORKS.build(name, **kwargs)


def build_dataset(name, **kwargs):
    return DATASETS.build(name, **kwargs)


def list_entries():
    """``{kind: [names and family templates]}`` for every registry."""
    return {kind: registry.names() for kind, registry in REGISTRIES.items()}


__all__ = [
    "DATASETS", "ENTRY_POINT_GROUP", "LOSSES", "METRICS", "NETWORKS", "REGISTRIES",
    "PluginImportError", "Registry", "UnknownNameError", "build_dataset", "build_network",
    "list_entries", "load_entry_point_plugins", "load_plugins", "register_dataset",
    "register_loss", "register_metric", "register_network",
]
