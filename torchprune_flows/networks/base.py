"""What pruning asks of a network: which layers are prunable and how their units connect."""
from torch import nn


class PrunableMixin:
    """Prunable layers are exactly the layers named in the vector fields' structured chains.

    A vector field declares ``structured_chains() -> [[(layer, input_offset), ...], ...]``: the
    layers that feed each other in order, and at which input column of each layer the outputs of
    the previous one start (1 for a "concat" layer whose first input is t), and optionally
    ``unit_companions() -> {id(layer): [modules]}``: time-only modules whose output rows belong
    to the units of ``layer`` (removed with them, never scored). Layers outside any chain (time
    gates, time biases, time convs) are never pruned on their own; the last layer of a chain
    keeps its outputs.

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
        last_layers = [chain[-1][0] for chain in chains[:-1]]
        return (any(module is layer for chain in chains for layer, _ in chain)
                and not any(module is layer for layer in last_layers))


def is_prunable_type(module):
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
