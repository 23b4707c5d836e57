"""Concatsquash vector fields: Linear layers on z, gated and shifted by functions of t."""
import torch
from torch import nn

from .mlp import make_activation


class ConcatSquashLinear(nn.Module):
    """``main(x) * sigmoid(gate(t)) + shift(t)``.

    ``main`` is the layer pruning acts on; ``gate`` (Linear(1, out) with bias) and ``shift``
    (Linear(1, out) without bias) read only the time and are never pruned.
    """

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.main = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(1, dim_out)
        self.shift = nn.Linear(1, dim_out, bias=False)

    def forward(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(1, 1)
        return self.main(x) * torch.sigmoid(self.gate(t)) + self.shift(t)


class ConcatSquashField(nn.Module):
    """``f(t, z)`` through concatsquash layers ``D -> H -> ... -> H -> D`` with ``act`` between.

    ``num_layers`` counts concatsquash layers. The main Linear layers form one chain for
    structured pruning: hidden units may be removed, the D outputs never.
    """

    def __init__(self, dim, hidden, num_layers, activation):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a concatsquash vector field needs at least 1 layer, got {num_layers}")
        widths = [dim] + [hidden] * (num_layers - 1) + [dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(make_activation(activation) for _ in range(num_layers - 1))

    def forward(self, t, z):
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.activations):
                z = self.activations[i](z)
        return z

    def structured_chains(self):
        return [[(layer.main, 0) for layer in self.layers]]
