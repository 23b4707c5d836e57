"""Time-conditioned vector fields built as a stack of layers ``layer(t, x)``."""
from torch import nn

from .mlp import make_activation


class TimeLayerStack(nn.Module):
    """``f(t, z)`` through layers that each read (t, x), with ``activation`` between consecutive ones.

    Each layer names its prunable module (``layer.prunable``), how many of that module's input
    columns/channels carry time (``layer.time_inputs``) and, optionally, the time-only modules
    whose output rows belong to the same units (``layer.companions``). The prunable modules form one chain for
    structured pruning: hidden units may be removed, the last layer's outputs and time inputs never.
    """

    def __init__(self, layers, activation):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.activations = nn.ModuleList(make_activation(activation) for _ in self.layers[1:])

    def forward(self, t, z):
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.activations):
                z = self.activations[i](z)
        return z

    def structured_chains(self):
        return [[(layer.prunable, layer.time_inputs) for layer in self.layers]]

    def unit_companions(self):
        """``{id(prunable module): [modules whose output rows are that module's units]}``."""
        return {id(layer.prunable): list(getattr(layer, "companions", [])) for layer in self.layers}
