"""Convolutional "concat" vector fields: every conv reads the time t as an extra input channel."""
import torch
from torch import nn

from .stack import TimeLayerStack


class ConcatConv2d(nn.Module):
    """``conv([t, x])``, computed as ``conv(x) + time([t])``: one conv over the data channels and
    one (without bias) over a constant channel holding t, with the same kernel and padding.

    This is a Conv2d over the C + 1 channels ``[t, x]`` with its time weights in ``time``: the
    same function and parameter count. Keeping them apart makes the time weights unreachable for
    structured pruning: torchprune's FilterThresNet zeroes every input channel that is constant
    across the batch, and t is, so it would make a flow time-independent (torchprune-host.md
    §5.1). ``conv`` is the prunable module; ``time`` rows follow its units (see ``companions``).
    """

    time_inputs = 0  # the prunable conv reads no time channel

    def __init__(self, channels_in, channels_out, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel_size, stride, padding)
        self.time = nn.Conv2d(1, channels_out, kernel_size, stride, padding, bias=False)

    @property
    def prunable(self):
        return self.conv

    @property
    def companions(self):
        """Modules whose output rows belong to ``conv``'s units (removed with them)."""
        return [self.time]

    def forward(self, t, x):
        time = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(1, 1, *x.shape[2:])
        return self.conv(x) + self.time(time)


class ConcatConvField(TimeLayerStack):
    """``f(t, z)``: 3x3 concat convs ``C -> h_1 -> ... -> h_k -> C`` with ``act`` between.

    ``hidden_channels`` is the tuple ``(h_1, ..., h_k)`` of the hidden convs' output channels.

    The data convs form the pruning chain: filters of hidden layers may be removed, the C output
    channels never, and the time convs only together with the filters they feed.
    """

    def __init__(self, channels, hidden_channels=(64, 64, 64), activation="softplus"):
        widths = [channels, *hidden_channels, channels]
        super().__init__([ConcatConv2d(a, b) for a, b in zip(widths[:-1], widths[1:])], activation)
