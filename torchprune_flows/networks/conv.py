"""Convolutional "concat" vector fields: every conv reads an extra input channel holding t."""
import torch
from torch import nn

from .stack import TimeLayerStack


class ConcatConv2d(nn.Module):
    """``conv([t, x])``: a Conv2d whose input channel 0 is the constant time t."""

    time_inputs = 1

    def __init__(self, channels_in, channels_out, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(channels_in + 1, channels_out, kernel_size, stride, padding)

    @property
    def prunable(self):
        return self.conv

    def forward(self, t, x):
        time = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([time, x], dim=1))


class ConcatConvField(TimeLayerStack):
    """``f(t, z)``: 3x3 concat convs ``C -> hidden -> ... -> hidden -> C`` with ``act`` between.

    The convs form the pruning chain with input offset 1 (channel 0 is t): filters of hidden
    layers may be removed, the C output channels and the time weights never.
    """

    def __init__(self, channels, hidden=(64, 64, 64), activation="softplus"):
        widths = [channels, *hidden, channels]
        super().__init__([ConcatConv2d(a, b) for a, b in zip(widths[:-1], widths[1:])], activation)
