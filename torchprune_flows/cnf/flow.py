"""A density model made of a chain of flow layers over a standard normal prior."""
import math

import torch
from torch import nn

from .cnf import without_divergence


def standard_normal_logprob(z):
    """log N(z; 0, I) per sample, summed over all non-batch dimensions."""
    log_z = -0.5 * math.log(2 * math.pi)
    return (log_z - 0.5 * z.pow(2)).reshape(z.shape[0], -1).sum(dim=1)


class StandardNormalPrior:
    """The prior N(0, I) as torchprune's ``NLLPriorLoss`` uses it: ``log_prob(z) -> (N,)``."""

    def log_prob(self, z):
        return standard_normal_logprob(z)

    def __repr__(self):
        return "StandardNormalPrior()"


STANDARD_NORMAL = StandardNormalPrior()

#: How torchprune's own flows lay out ``"out"`` (see :class:`FlowNetwork`).
LATENT_LAYOUT, PRIOR_LAYOUT = "latent", "prior"


def apply_layers(layers, x, delta_logp, reverse=False):
    """Run flow layers in order, or in reverse order with ``reverse=True``: ``(y, delta_logp)``."""
    for layer in (reversed(layers) if reverse else layers):
        x, delta_logp = layer(x, delta_logp, reverse=reverse)
    return x, delta_logp


class FlowSequence(nn.Module):
    """Flow layers applied in order (density direction) or in reverse order (``reverse=True``).

    Itself a :class:`~torchprune_flows.cnf.protocols.FlowLayer`:
    ``sequence(x, delta_logp, reverse=False) -> (y, delta_logp)`` with ``delta_logp`` of shape (N,).
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, delta_logp, reverse=False):
        return apply_layers(self.layers, x, delta_logp, reverse)


class FlowNetwork(nn.Module):
    """A density model ``log p(x) = log N(z; 0, I) - delta_logp`` with ``z`` the flow of ``x``.

    ``layers`` is a sequence of :class:`~torchprune_flows.cnf.protocols.FlowLayer` s with the
    signature ``layer(x, delta_logp, reverse=False) -> (y, delta_logp)`` (CNF blocks, fixed
    transforms, :class:`FlowSequence` s; ``delta_logp`` of shape (N,)); ``log_prob`` and
    ``sample`` serve users directly.

    **Output protocol** (the one place it is stated). ``forward(x)`` returns a dict that both
    this package's and torchprune's losses and metrics read, for a batch of N samples:

    =============  ==================  =======================================================
    key            shape               meaning
    =============  ==================  =======================================================
    ``"z"``        (N, *latent)        the latent; ``log N(z; 0, I)`` is summed over all but N
    ``"delta_logp"`` (N, 1)            ``log p(x) = log N(z) - delta_logp`` (torchprune's shape)
    ``"out"``      see layout          torchprune's view of the latent, by ``TORCHPRUNE_LAYOUT``:
                                       ``"latent"`` (tabular, image flows): ``z`` itself, read by
                                       torchprune's ``NLLNatsLoss`` / ``NLLBitsLoss``;
                                       ``"prior"`` (toy flows): ``cat([delta_logp, z], 1)``,
                                       column 0 the accumulated trace term, read by its
                                       ``NLLPriorLoss`` together with ``"prior"``
    ``"prior"``    object              ``"prior"`` layout only: N(0, I) with ``log_prob(z)``
    ``"nelement"`` int                 ``x.nelement()``: torchprune's bits/dim divides by it
    =============  ==================  =======================================================

    :func:`torchprune_flows.objectives.flow_terms` reads this dict and torchprune's own flow
    outputs (``{"out", "prior"}``; ``{"out", "delta_logp"[, "nelement", "reg_loss"]}``) alike.
    """

    TORCHPRUNE_LAYOUT = LATENT_LAYOUT

    def __init__(self, layers, data_shape):
        super().__init__()
        self.chain = nn.ModuleList(layers)
        self.data_shape = tuple(data_shape)

    def forward(self, x):
        delta_logp = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        z, delta_logp = apply_layers(self.chain, x, delta_logp)
        return self.outputs(x, z, delta_logp)

    def outputs(self, x, z, delta_logp):
        """The protocol dict for input ``x``, latent ``z`` and ``delta_logp`` of shape (N,)."""
        delta_logp = delta_logp.reshape(-1, 1)
        out = {"z": z, "delta_logp": delta_logp, "nelement": x.nelement()}
        if self.TORCHPRUNE_LAYOUT == PRIOR_LAYOUT:
            out["out"] = torch.cat([delta_logp, z.reshape(z.shape[0], -1)], dim=1)
            out["prior"] = STANDARD_NORMAL
        else:
            out["out"] = z
        return out

    def log_prob(self, x):
        """log p(x) per sample, shape (N,)."""
        out = self(x)
        return standard_normal_logprob(out["z"]) - out["delta_logp"].reshape(-1)

    def inverse(self, z):
        """Data ``x`` for latents ``z``: the chain run in reverse."""
        delta_logp = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        return apply_layers(self.chain, z, delta_logp, reverse=True)[0]

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
