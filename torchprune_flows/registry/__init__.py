"""The registries of networks, datasets, losses, metrics and pruning methods, and their decorators.

    from torchprune_flows.registry import register_network

    @register_network("my_flow")
    def my_flow(num_classes, **kwargs):
        ...

Families are registered with a template (see :mod:`.core`), e.g.
``register_network("ffjord_l{layers:d}_h{hidden:d}_{activation}[_{suffix:*}]",
examples=["ffjord_l2_h8_tanh"], choices={"activation": Choices(["tanh", "relu"])})``.
:func:`list_families` lists every family with its examples (small members that build fast).
"""
from .core import Choices, Example, InvalidFieldError, Registry, UnknownNameError
from .methods import PruningMethod
from .plugins import ENTRY_POINT_GROUP, PluginImportError, load_entry_point_plugins, load_plugins, plugin_reference

NETWORKS = Registry("network")
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
METRICS = Registry("metric")
METHODS = Registry("method")
REGISTRIES = {"network": NETWORKS, "dataset": DATASETS, "loss": LOSSES, "metric": METRICS, "method": METHODS}


def register_network(name, *, examples=None, choices=None):
    """Decorator: register a network factory ``f(num_classes, **kwargs) -> nn.Module``.

    ``examples``: small members that build fast, as names or ``(name, kwargs)`` pairs (e.g.
    ``("ffjord_l1_hm2_f1_tanh", {"num_classes": 3})``); ``choices``: ``{field: Choices(...)}``,
    the values a template field accepts. See :mod:`torchprune_flows.registry.core`.
    """
    return NETWORKS.register(name, examples=examples, choices=choices)


def register_dataset(name):
    """Decorator: register a dataset class ``cls(root, train, download, transform, ...)``."""
    return DATASETS.register(name)


def register_loss(name):
    """Decorator: register a loss class ``cls(**lossKwargs)``; ``loss(outputs, targets)``."""
    return LOSSES.register(name)


def register_metric(name):
    """Decorator: register a metric class ``cls(output_size, **kwargs)`` (higher is better)."""
    return METRICS.register(name)


def register_method(name, *, alias=None, structured=False, in_torchprune=False):
    """Decorator: register a pruning function ``f(net, keep_ratio, params_original, over) -> keep
    ratio reached`` as a :class:`PruningMethod` (see :mod:`.methods`); returns ``f`` unchanged.
    ``alias``: a short name configs may use; ``structured``: it removes whole units (the runner
    retrains the compacted net); ``in_torchprune``: torchprune's runner has a method of this name."""

    def decorate(prune):
        method = PruningMethod(name, prune, alias, structured, in_torchprune)
        same = METHODS._entry(name)  # the same registration again (a plugin loaded twice) stays silent
        METHODS.register(name, same if same == method else method)
        return prune

    return decorate


def build_network(name, **kwargs):
    return NETWORKS.build(name, **kwargs)


def build_dataset(name, **kwargs):
    return DATASETS.build(name, **kwargs)


def list_entries(pattern=None):
    """``{kind: [names and family templates]}`` for every registry (``pattern``: shell wildcards)."""
    return {kind: registry.names(pattern) for kind, registry in REGISTRIES.items()}


def list_families(kind="network", pattern=None):
    """``{family template or name: (Example, ...)}`` of one registry; see :meth:`Registry.families`."""
    return REGISTRIES[kind].families(pattern)


__all__ = [
    "Choices", "DATASETS", "ENTRY_POINT_GROUP", "Example", "InvalidFieldError", "LOSSES", "METRICS",
    "METHODS", "NETWORKS", "PruningMethod", "REGISTRIES", "PluginImportError", "Registry", "UnknownNameError", "build_dataset",
    "build_network", "list_entries", "list_families", "load_entry_point_plugins", "load_plugins", "plugin_reference",
    "register_dataset", "register_loss", "register_method", "register_metric", "register_network",
]
