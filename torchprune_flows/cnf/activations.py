"""The activations of the package's vector fields, defined once.

:data:`ACTIVATIONS` maps each name a network name may use (``ffjord_l2_h8_tanh``: ``tanh``) to
its module class, its value and slope ``(act(a), act'(a))`` and its curvature ``act''(a)`` (for
the one-pass Hutchinson path, :mod:`.affine_hutchinson`). The MLP / concatsquash / concat-conv
fields build their activation modules from it, the one-pass path and export recognise modules by
it. The standalone loader (:mod:`torchprune_flows.standalone`) must import nothing from the
package, so it keeps its own name -> function table; a test checks that both name the same
activations and compute the same values.

This module imports only torch: :mod:`torchprune_flows.cnf` and :mod:`torchprune_flows.networks`
both read it without importing each other.
"""
from typing import NamedTuple

import torch
from torch import nn


def _softplus(a):
    d1 = torch.sigmoid(a)
    return nn.functional.softplus(a), d1


def _tanh(a):
    h = torch.tanh(a)
    return h, 1 - h * h


def _sigmoid(a):
    h = torch.sigmoid(a)
    return h, torch.addcmul(h, h, h, value=-1)  # h (1 - h) in one pass over the batch


def _relu(a):
    d1 = (a > 0).to(a.dtype)
    return a * d1, d1


def _elu(a):
    h = nn.functional.elu(a)
    return h, torch.where(a > 0, torch.ones_like(a), h + 1)


def _silu(a):
    s = torch.sigmoid(a)
    return a * s, s * (1 + a * (1 - s))


def _second_softplus(a, h, d1):
    return torch.addcmul(d1, d1, d1, value=-1)


def _second_tanh(a, h, d1):
    return -2 * h * d1


def _second_sigmoid(a, h, d1):
    return torch.addcmul(d1, d1, h, value=-2)


def _second_relu(a, h, d1):
    return torch.zeros_like(a)


def _second_elu(a, h, d1):
    return torch.where(a > 0, torch.zeros_like(a), h + 1)


def _second_silu(a, h, d1):
    s = torch.sigmoid(a)
    return s * (1 - s) * (2 + a * (1 - 2 * s))


def _always(module):
    return True


class Activation(NamedTuple):
    """One activation: ``value_and_slope(a) -> (act(a), act'(a))``,
    ``curvature(a, act(a), act'(a)) -> act''(a)``, its ``module`` class and ``reproduces(module)``:
    whether an instance of that class computes this function (False for non-default arguments)."""

    value_and_slope: callable
    curvature: callable
    name: str
    module: type
    reproduces: callable = _always


#: name -> :class:`Activation`, in the order error messages list them
ACTIVATIONS = {a.name: a for a in [
    Activation(_sigmoid, _second_sigmoid, "sigmoid", nn.Sigmoid),
    Activation(_softplus, _second_softplus, "softplus", nn.Softplus,
               lambda m: m.beta == 1 and m.threshold == 20),
    Activation(_tanh, _second_tanh, "tanh", nn.Tanh),
    Activation(_relu, _second_relu, "relu", nn.ReLU),
    Activation(_elu, _second_elu, "elu", nn.ELU, lambda m: m.alpha == 1.0),
    Activation(_silu, _second_silu, "swish", nn.SiLU),
]}

_BY_MODULE = {a.module: a for a in ACTIVATIONS.values()}


def activation_of(module):
    """The :class:`Activation` ``module`` computes (its exact class, default arguments), or None."""
    kind = _BY_MODULE.get(type(module))
    return kind if kind is not None and kind.reproduces(module) else None


__all__ = ["ACTIVATIONS", "Activation", "activation_of"]
