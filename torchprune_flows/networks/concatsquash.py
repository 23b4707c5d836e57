"""Concatsquash vector fields: Linear layers on z, gated and shifted by functions of t."""
import torch
from torch import nn

from ..cnf.affine_hutchinson import activation_of, linear_layer
from .stack import TimeLayerStack


class ConcatSquashLinear(nn.Module):
    """``main(x) * sigmoid(gate(t)) + shift(t)``.

    ``main`` is the layer pruning acts on; ``gate`` (Linear(1, out) with bias) and ``shift``
    (Linear(1, out) without bias) read only the time: they are never scored, and lose a row
    only when the unit it feeds is removed.
    """

    time_inputs = 0  # the main Linear reads no time column

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.main = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(1, dim_out)
        self.shift = nn.Linear(1, dim_out, bias=False)

    @property
    def prunable(self):
        return self.main

    @property
    def companions(self):
        """Modules whose output rows belong to ``main``'s units (removed with them)."""
        return [self.gate, self.shift]

    def time_modulation(self, t, like):
        """``(sigmoid(gate(t)), shift(t))``, each a (1, out) row, in the dtype/device of ``like``."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(1, 1)
        return torch.sigmoid(self.gate(t)), self.shift(t)

    def forward(self, t, x):
        gate, shift = self.time_modulation(t, x)
        return self.main(x) * gate + shift


class ConcatSquashField(TimeLayerStack):
    """``f(t, z)`` through concatsquash layers ``D -> H -> ... -> H -> D`` with ``act`` between.

    ``hidden_width`` is the int H; ``num_layers`` counts all concatsquash layers (the hidden
    ones and the output one); their main Linear layers form the pruning chain.
    """

    def __init__(self, dim, hidden_width, num_layers, activation):
        if num_layers < 1:
            raise ValueError(f"a concatsquash vector field needs at least 1 layer, got {num_layers}")
        widths = [dim] + [hidden_width] * (num_layers - 1) + [dim]
        super().__init__([ConcatSquashLinear(a, b) for a, b in zip(widths[:-1], widths[1:])], activation)

    def as_affine_stack(self, t, like):
        """``(layers, activations)`` of this field at time ``t`` for
        :func:`~torchprune_flows.cnf.affine_hutchinson.field_and_hutchinson`, or None when a
        module is not one that path reproduces (then the generic autograd path runs)."""
        activations = [activation_of(m) for m in self.activations]
        if any(a is None for a in activations) or any(type(layer) is not ConcatSquashLinear for layer in self.layers):
            return None
        layers = []
        for layer in self.layers:
            affine = linear_layer(layer.main, *layer.time_modulation(t, like))
            if affine is None:
                return None
            layers.append(affine)
        return layers, activations
