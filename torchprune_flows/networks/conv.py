"""Convolutional "concat" vector fields: every conv reads an extra input channel holding t."""
import torch
from torch import nn

from .mlp import make_activation


class ConcatConv2d(nn.Module):
    """``conv([t, x])``: a Conv2d whose input channel 0 is the constant time t."""

    def __init__(self, channels_in, channels_out, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(channels_in + 1, channels_out, kernel_size, stride, padding)

    def forward(self, t, x):
        time = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([time, x], dim=1))


class ConcatConvField(nn.Module):
    """``f(t, z)``: 3x3 concat convs ``C -> hidden -> ... -> hidden -> C`` with ``act`` between.

    The convs form one chain for structured pruning, each with input offset 1 (channel 0 is t):
    filters of hidden layers may be removed, the C output channels and the time weights never.
    """

    def __init__(self, channels, hidden=(64, 64, 64), activation="softplus"):
        super().__init__()
        widths = [channels, *hidden, channels]
        self.layers = nn.ModuleList(ConcatConv2d(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(make_activation(activation) for _ in hidden)

    def forward(self, t, z):
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.activations):
                z = self.activations[i](z)
        return z

    def structured_chains(self):
        return [[(layer.conv, 1) for layer in self.layers]]
