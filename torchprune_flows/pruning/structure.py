"""Which layers a pruning method may touch, and how their units feed each other."""
from ..networks.base import is_prunable_type


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

    Networks that declare no chains are treated as one chain of all prunable layers in module
    order (only the last layer's outputs are then protected).
    """
    chains = net.structured_chains() if hasattr(net, "structured_chains") else []
    if not chains:
        chains = [[(m, 0) for m in prunable_layers(net)]]
    return chains


def unit_companions(net):
    """``{id(layer): [modules]}``: time-only modules whose output rows are ``layer``'s units."""
    return net.unit_companions() if hasattr(net, "unit_companions") else {}
