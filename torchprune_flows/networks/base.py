"""What pruning asks of a network: which layers are prunable and how their units connect."""
from torch import nn


class PrunableMixin:
    """Prunable layers are exactly the layers named in the vector fields' structured chains.

    A vector field declares ``structured_chains() -> [[(layer, input_offset), ...], ...]``: the
    layers that feed each other in order, and at which input column of each layer the outputs of
    the previous one start (1 for a "concat" layer whose first input is t). Layers outside any
    chain (time gates, time biases) are never pruned; the last layer of a chain keeps its outputs.
    """

    def structured_chains(self):
        chains = []
        for module in self.modules():
            if module is not self and hasattr(module, "structured_chains"):
                chains.extend(module.structured_chains())
        return chains

    def is_compressible(self, module):
        return any(module is layer for chain in self.structured_chains() for layer, _ in chain)


def is_prunable_type(module):
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
