"""Fixed invertible flow layers with the CNF block's signature ``layer(x, delta_logp, reverse)``."""
import math

import torch
from torch import nn


class LogitTransform(nn.Module):
    """``y = logit(alpha + (1 - 2 alpha) x)`` for x in [0, 1] (FFJORD's image pre-processing).

    Density direction: ``delta_logp -= log |dy/dx|`` summed over dimensions, so that
    ``log p(x) = log p(z) - delta_logp`` includes the transform's log-determinant.
    """

    def __init__(self, alpha=1e-6):
        super().__init__()
        self.alpha = alpha

    def log_det(self, s):
        """log |dy/dx| per sample at s = alpha + (1 - 2 alpha) x."""
        per_dim = math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)
        return per_dim.reshape(s.shape[0], -1).sum(dim=1)

    def forward(self, x, delta_logp, reverse=False):
        if reverse:
            s = torch.sigmoid(x)
            return (s - self.alpha) / (1 - 2 * self.alpha), delta_logp + self.log_det(s)
        s = self.alpha + (1 - 2 * self.alpha) * x
        return torch.log(s) - torch.log1p(-s), delta_logp - self.log_det(s)


class Squeeze(nn.Module):
    """Space to channels: (C, H, W) -> (4C, H/2, W/2), every 2x2 patch into the channels. Volume-preserving."""

    def forward(self, x, delta_logp, reverse=False):
        b, c, h, w = x.shape
        if reverse:
            x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
            return x.reshape(b, c // 4, h * 2, w * 2), delta_logp
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(b, c * 4, h // 2, w // 2), delta_logp
