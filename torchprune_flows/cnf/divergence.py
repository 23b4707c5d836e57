"""Divergence of a vector field: exact (one vector-Jacobian product per dimension) or Hutchinson.

Every estimator is a function ``(f, z, create_graph, probe) -> div`` of shape (N,) for the
vector field's value ``f`` at ``z`` (both (N, *state), ``f`` computed from ``z`` with grad
enabled); ``probe`` is the solve's fixed Hutchinson probe, or None for estimators that draw
none. :data:`DIVERGENCES` is the table the CNF blocks choose from by name (like torchdiffeq's
``SOLVERS``): adding an estimator is one function and one entry.
"""
from typing import Callable, NamedTuple

import torch

PROBES = ("gaussian", "rademacher")


def sample_probe(like, kind):
    """A Hutchinson probe with E[e e^T] = I, of the shape of ``like``."""
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, low=0, high=2).mul_(2).sub_(1)
    raise ValueError(f"unknown probe '{kind}'; choose from {', '.join(PROBES)}")


def divergence_exact(f, z, create_graph, probe=None):
    """sum_i d f_i / d z_i per sample, with one autograd pass per dimension."""
    f_flat = f.reshape(f.shape[0], -1)
    z_dims = f_flat.shape[1]
    div = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    for i in range(z_dims):
        grad = torch.autograd.grad(f_flat[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[0]
        div = div + grad.reshape(f.shape[0], -1)[:, i]
    return div


def divergence_hutchinson(f, z, create_graph, probe):
    """Unbiased estimate e^T (df/dz) e per sample, e fixed by the caller."""
    e_jac = torch.autograd.grad(f, z, probe, create_graph=create_graph, retain_graph=True)[0]
    return (e_jac * probe).reshape(f.shape[0], -1).sum(dim=1)


def divergence_none(f, z, create_graph, probe=None):
    """Zero: a plain neural ODE, whose log-density is not tracked."""
    return torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)


class Estimator(NamedTuple):
    """A divergence estimator: ``function(f, z, create_graph, probe)``; ``uses_probe``: whether
    each solve draws a Hutchinson probe for it (drawing one consumes the random stream)."""

    function: Callable
    uses_probe: bool = False


#: the divergence estimators by name: ``CNF(field, divergence=NAME)``
DIVERGENCES = {
    "exact": Estimator(divergence_exact),
    "hutchinson": Estimator(divergence_hutchinson, uses_probe=True),
    "none": Estimator(divergence_none),
}
