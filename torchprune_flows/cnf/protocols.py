"""The two contracts every flow in this package is built from, stated once.

A :class:`VectorField` is what a CNF block integrates; a :class:`FlowLayer` is what a
:class:`~torchprune_flows.cnf.flow.FlowNetwork` chains (CNF blocks, fixed transforms and
sequences of them). Both are structural (:class:`typing.Protocol`): any ``nn.Module`` with the
right call signature satisfies them, nothing has to inherit from them. The output protocol of a
whole density model is stated in :class:`~torchprune_flows.cnf.flow.FlowNetwork`'s docstring.
"""
from typing import Protocol, Tuple, runtime_checkable

import torch


@runtime_checkable
class VectorField(Protocol):
    """``f(t, z) -> dz/dt``: the time derivative of the state of a CNF block.

    ``t`` is a scalar tensor (0-d; the time in [0, T]) and ``z`` the state of shape
    ``(N, *state)`` -- ``(N, D)`` for toy and tabular flows, ``(N, C, H, W)`` for image flows.
    The result has the shape of ``z``. ``f`` must be differentiable in ``z`` (the divergence is
    computed by autograd) and must not mix samples: ``dz/dt[i]`` depends on ``z[i]`` only.
    Vector fields that take part in structured pruning also follow
    :class:`torchprune_flows.pruning.protocol.PrunableField`.
    """

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ...


@runtime_checkable
class FlowLayer(Protocol):
    """``layer(x, delta_logp, reverse=False) -> (y, delta_logp)``: one invertible step of a flow.

    ``x`` has shape ``(N, *shape_in)``, ``y`` shape ``(N, *shape_out)`` with the same number of
    elements per sample; ``delta_logp`` has shape ``(N,)``. In the density direction
    (``reverse=False``) the layer maps data towards the latent and *subtracts* its
    log-determinant, ``delta_logp_out = delta_logp - log |det dy/dx|``, so that after the whole
    chain ``log p(x) = log N(z; 0, I) - delta_logp``. ``reverse=True`` is the inverse map
    (sampling direction), adding the log-determinant back.
    """

    def __call__(self, x: torch.Tensor, delta_logp: torch.Tensor,
                 reverse: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        ...
