"""What pruning asks of a network, stated in one place: which layers are prunable and how their
units connect.

A vector field takes part in structured pruning by following :class:`PrunableField`; a
network gathers its fields' declarations with :class:`PrunableMixin`; the pruning methods read
them through :func:`structured_chains`, :func:`unit_companions` and :func:`prunable_layers`,
which also hold the fallback for networks that declare nothing.
"""
from typing import List, Protocol, Tuple, runtime_checkable

from torch import nn

#: ``[[(layer, input_offset), ...], ...]``: see :meth:`PrunableField.structured_chains`
Chains = List[List[Tuple[nn.Module, int]]]


@runtime_checkable
class PrunableField(Protocol):
    """The pruning protocol of a vector field (``unit_companions`` is optional).

    ``structured_chains() -> [[(layer, input_offset), ...], ...]``: the prunable layers (plain
    ``nn.Linear`` / ``nn.Conv2d``) that feed each other in order, and at which input column of
    each layer the outputs of the previous one start (1 for a "concat" layer whose first input
    is t). Hidden units of a chain may be removed; the last layer of a chain keeps its outputs.

    ``unit_companions() -> {id(layer): [modules]}``: time-only modules whose output rows belong
    to the units of ``layer`` (removed with them, never scored). Layers outside any chain (time
    gates, time biases, time convs) are never pruned on their own.
    """

    def structured_chains(self) -> Chains:
        ...


class PrunableMixin:
    """For networks: the chains and companions of every :class:`PrunableField` inside, and
    torchprune's ``is_compressible`` hook.

    Prunable layers are exactly the layers named in the vector fields' structured chains.
    :meth:`is_compressible` is torchprune's hook (its ``NetHandle`` registers only the layers it
    accepts, for every method): the chain layers, except the output layer of every chain but the
    network's last. torchprune's FilterThresNet keeps the outputs of the last compressible layer
    only, so this is how every CNF block keeps its D outputs under it (torchprune-host.md §5.2);
    torchprune's WT then leaves those intermediate output layers dense (ours prunes them).
    """

    def structured_chains(self):
        chains = []
        for module in self.modules():
            if module is not self and hasattr(module, "structured_chains"):
                chains.extend(module.structured_chains())
        return chains

    def unit_companions(self):
        companions = {}
        for module in self.modules():
            if module is not self and hasattr(module, "unit_companions"):
                companions.update(module.unit_companions())
        return companions

    def is_compressible(self, module):
        chains = self.structured_chains()
        if not chains:  # no field declares chains: every plain layer, one chain (see structured_chains())
            return is_prunable_type(module)
        last_layers = [chain[-1][0] for chain in chains[:-1]]
        return (any(module is layer for chain in chains for layer, _ in chain)
                and not any(module is layer for layer in last_layers))


def is_prunable_type(module):
    """Plain ``nn.Linear``, or ``nn.Conv2d`` without groups: the layer types pruning acts on."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def prunable_layers(net):
    """Plain Linear / Conv2d layers in module order: the layers of the network's structured
    chains when it declares them, otherwise those its ``is_compressible`` accepts (or all)."""
    chains = net.structured_chains() if hasattr(net, "structured_chains") else []
    if chains:
        in_chains = {id(layer) for chain in chains for layer, _ in chain}
        return [m for m in net.modules() if id(m) in in_chains]
    check = getattr(net, "is_compressible", None)
    return [m for m in net.modules() if is_prunable_type(m) and (check is None or check(m))]


def structured_chains(net):
    """Chains ``[(layer, input_offset), ...]`` of prunable layers feeding each other in order.

    The fallback: networks that declare no chains are treated as one chain of all prunable
    layers in module order (only the last layer's outputs are then protected).
    """
    chains = net.structured_chains() if hasattr(net, "structured_chains") else []
    if not chains:
        chains = [[(m, 0) for m in prunable_layers(net)]]
    return chains


def unit_companions(net):
    """``{id(layer): [modules]}``: time-only modules whose output rows are ``layer``'s units."""
    return net.unit_companions() if hasattr(net, "unit_companions") else {}
