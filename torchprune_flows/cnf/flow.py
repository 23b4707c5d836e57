"""A density model made of a chain of flow layers over a standard normal prior."""
import math

import torch
from torch import nn

from .cnf import without_divergence


def standard_normal_logprob(z):
    """log N(z; 0, I) per sample, summed over all non-batch dimensions."""
    log_z = -0.5 * math.log(2 * math.pi)
    return (log_z - 0.5 * z.pow(2)).reshape(z.shape[0], -1).sum(dim=1)


class FlowNetwork(nn.Module):
    """``forward(x) -> {"z", "delta_logp"}`` with ``log p(x) = log N(z) - delta_logp``.

    ``layers`` is a sequence of flow layers with the signature
    ``layer(x, delta_logp, reverse=False) -> (y, delta_logp)`` (CNF blocks, fixed transforms).
    The losses in :mod:`torchprune_flows.objectives` read this dict; ``log_prob`` and ``sample``
    serve users directly.
    """

    def __init__(self, layers, data_shape):
        super().__init__()
        self.chain = nn.ModuleList(layers)
        self.data_shape = tuple(data_shape)

    def forward(self, x):
        delta_logp = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        z = x
        for layer in self.chain:
            z, delta_logp = layer(z, delta_logp)
        return {"z": z, "delta_logp": delta_logp}

    def log_prob(self, x):
        out = self(x)
        return standard_normal_logprob(out["z"]) - out["delta_logp"]

    def inverse(self, z):
        """Data ``x`` for latents ``z``: the chain run in reverse."""
        delta_logp = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for layer in reversed(self.chain):
            z, delta_logp = layer(z, delta_logp, reverse=True)
        return z

    @torch.no_grad()
    def sample(self, num_samples, generator=None, z=None):
        """Draw z ~ N(0, I) and invert the flow (no divergence, so no random probes)."""
        if z is None:
            param = next(self.parameters())
            z = torch.randn((num_samples, *self.data_shape), generator=generator,
                            dtype=param.dtype, device=param.device if generator is None else "cpu")
            z = z.to(param.device)
        with without_divergence(self):
            return self.inverse(z)
