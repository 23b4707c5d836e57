"""``f(t, z)`` and its Hutchinson divergence ``e^T (df/dz) e`` in one pass, for stacks of affine layers.

Why this exists: the generic path (:mod:`.divergence`) gets ``e^T df/dz`` from an autograd
vector-Jacobian product with ``create_graph=True``, so every backward evaluation of an adjoint
solve differentiates autograd's own backward graph (a double backward), whose elementwise part
cost more than the matrix products (the measurements: README, "Solver cost").

Here the stack ``a_l = gamma_l * (W_l h_{l-1} + b_l) + beta_l``, ``h_l = act(a_l)`` (concatsquash
layers: ``gamma = sigmoid(gate(t))``, ``beta = shift(t)``; plain Linear layers: neither) carries
the probe forward as a tangent, ``r_l = gamma_l * (W_l v_{l-1})``, ``v_l = act'(a_l) r_l`` with
``v_0 = e``, so that ``r_L = (df/dz) e`` and the estimate is ``sum(e * r_L)``: the same matrix
products as the vector-Jacobian product (the trace is the same number) and one hand-written
backward with the activation's second derivative (:mod:`.activations`) instead of a double
backward. The result is the generic path's to rounding (tests compare values and gradients in
float64, and the gradients against finite differences).

The backward is first-order only: differentiating it with ``create_graph=True`` raises (it would
otherwise treat its saved intermediates as constants and miss second-order terms). Adjoint solves
(whose backward evaluations call ``autograd.grad`` without ``create_graph``), backprop through the
solver and evaluation without gradients all use it; second derivatives (the Hessian analysis)
take the generic path inside :func:`torchprune_flows.cnf.twice_differentiable`.
"""
from typing import NamedTuple, Optional

import torch
from torch import nn
from torch.nn.utils import prune

from .activations import Activation, activation_of


class AffineLayer(NamedTuple):
    """``gate * (x @ weight.T + bias) + shift``; ``gate``/``shift`` are (1, out) rows or None."""

    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    gate: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None


def plain_linear_tensors(module):
    """``(weight, bias)`` of an ``nn.Linear`` as its forward uses them (``orig * mask`` under
    ``torch.nn.utils.prune``, with autograd), or None for anything else: a subclass, a module with
    other hooks, a reparametrisation this path does not know."""
    if type(module) is not nn.Linear or module._forward_hooks or getattr(module, "parametrizations", None):
        return None
    if any(not isinstance(h, prune.BasePruningMethod) for h in module._forward_pre_hooks.values()):
        return None

    def used(name):
        mask = getattr(module, name + "_mask", None)
        return getattr(module, name) if mask is None else getattr(module, name + "_orig") * mask

    return used("weight"), (used("bias") if module.bias is not None else None)


def field_and_hutchinson(layers, activations, z, probe):
    """``(f, e^T (df/dz) e)`` of the stack ``layers`` (a list of :class:`AffineLayer`) with
    ``activations`` (one :class:`Activation` per hidden layer) at ``z`` (N, D), probe ``e`` (N, D);
    with ``probe`` None the field alone and None."""
    if len(activations) != len(layers) - 1:
        raise ValueError(f"{len(layers)} layers need {len(layers) - 1} activations, got {len(activations)}")
    if not torch.is_grad_enabled():
        return _forward(z, probe, activations, layers, keep=False)[:2]
    flat = [tensor for layer in layers for tensor in layer]
    return _AffineStackWithProbe.apply(z, probe, tuple(activations), *flat)


FIRST_ORDER_ONLY = ("the one-pass Hutchinson evaluation (torchprune_flows.cnf.affine_hutchinson) is differentiable "
                    "once only: evaluate the flow inside `with torchprune_flows.cnf.twice_differentiable(net):` "
                    "to take second derivatives")


class _AffineStackWithProbe(torch.autograd.Function):
    """Forward: the field and the probe's tangent through the stack; backward: by hand (module doc).

    The gate is folded into the layer, ``W' = diag(gamma) W`` and ``b' = gamma * b + beta``, so
    that each layer is one ``addmm`` for the state and one ``mm`` for the tangent; the backward
    finds the gradients of ``W'`` and ``b'`` and turns them into those of ``W``, ``b``, ``gamma``
    and ``beta`` on parameter-sized tensors. Batch-sized temporaries are updated in place.
    """

    @staticmethod
    def forward(ctx, z, probe, activations, *flat):
        f, div, saved = _forward(z, probe, activations, _layers(flat), keep=True)
        ctx.save_for_backward(*saved, *flat)  # the layers' tensors too: torch checks them for in-place changes
        ctx.activations, ctx.num_saved = activations, len(saved)
        return f, div

    @staticmethod
    def backward(ctx, grad_f, grad_div):
        if torch.is_grad_enabled():  # create_graph=True: refuse rather than miss second-order terms
            raise RuntimeError(FIRST_ORDER_ONLY)
        saved, flat = ctx.saved_tensors[:ctx.num_saved], ctx.saved_tensors[ctx.num_saved:]
        grad_z, grads = _backward(saved, _layers(flat), ctx.activations, grad_f, grad_div,
                                  ctx.needs_input_grad[0], ctx.needs_input_grad[3:])
        return (grad_z, None, None, *grads)


def field_hutchinson_and_vjp(layers, activations, z, probe, grad_f, grad_div, needs):
    """``(f, div, grad_z, grads)`` without autograd: the stack's value and estimate at ``z``, and
    the gradients of ``<grad_f, f> + <grad_div, div>`` w.r.t. ``z`` and each tensor of ``layers``
    (flattened as ``(weight, bias, gate, shift)`` per layer; None where ``needs`` says no). What an
    adjoint solve asks of every backward evaluation, in one forward and one backward pass."""
    f, div, saved = _forward(z, probe, activations, layers, keep=True)
    grad_z, grads = _backward(saved, layers, activations, grad_f, grad_div, True, needs)
    return f, div, grad_z, grads


def _backward(saved, layers, activations, grad_f, grad_div, needs_z, needs):
    """Gradients w.r.t. ``z`` and the flat layer tensors from what :func:`_forward` kept."""
    z, probe, *rest = saved
    num_layers = len(layers)
    hidden = [rest[5 * i:5 * i + 5] for i in range(num_layers - 1)]  # (a, h, slope, r, v) per hidden layer
    folded_weights = rest[5 * (num_layers - 1):]
    grads = [None] * (4 * num_layers)
    a_bar = grad_f if grad_f is not None else z.new_zeros(z.shape[0], layers[-1].weight.shape[0])
    if probe is None:  # the field alone: no tangent to carry back
        r_bar = None
    else:
        r_bar = grad_div.unsqueeze(1) * probe if grad_div is not None else torch.zeros_like(a_bar)
    grad_z = None
    for i in reversed(range(num_layers)):
        layer, weight = layers[i], folded_weights[i]
        h_in, v_in = (z, probe) if i == 0 else (hidden[i - 1][1], hidden[i - 1][4])
        _unfold_grads(layer, a_bar, r_bar, h_in, v_in, needs[4 * i:4 * i + 4], grads, 4 * i)
        if i == 0:
            if needs_z:
                grad_z = _times(a_bar, weight)
            break
        h_bar = _times(a_bar, weight)
        # through h = act(a) and v = act'(a) r of the layer below
        a, h, slope, r, _ = hidden[i - 1]
        if r_bar is None:
            a_bar = h_bar.mul_(slope)
            continue
        v_bar = _times(r_bar, weight)
        a_bar = activations[i - 1].curvature(a, h, slope).mul_(r).mul_(v_bar).addcmul_(h_bar, slope)
        r_bar = v_bar.mul_(slope)
    return grad_z, grads


#: Matrix products in the layouts that MKL computes fast. With one narrow side (the 2-D toy flows'
#: 2 inputs or outputs) the layout decides: on an AMD EPYC, (1024, 128) @ (128, 2) took 144 us as
#: stored and 26 us with the right operand stored transposed; (1024, 128)^T @ (1024, 2) 152 us, its
#: transpose (1024, 2)^T @ (1024, 128) 21 us. Wide products are the same in every layout.
NARROW_COLUMNS = 16


def _times(rows, weight):
    """``rows @ weight`` for a weight of shape (out, in)."""
    if weight.shape[1] < NARROW_COLUMNS:
        return torch.mm(rows, weight.t().contiguous().t())
    return rows @ weight


def _weight_grad(a_bar, h_in, r_bar, v_in):
    """``a_bar^T h_in + r_bar^T v_in`` (the second term only with a tangent), shape (out, in), as
    the product with the wider result."""
    if a_bar.shape[1] > h_in.shape[1]:
        grad = torch.mm(h_in.t(), a_bar)
        return (grad if r_bar is None else grad.addmm_(v_in.t(), r_bar)).t()
    grad = torch.mm(a_bar.t(), h_in)
    return grad if r_bar is None else grad.addmm_(r_bar.t(), v_in)


def _layers(flat):
    """The :class:`AffineLayer` list of the flat ``(weight, bias, gate, shift, ...)`` sequence."""
    return [AffineLayer(*flat[i:i + 4]) for i in range(0, len(flat), 4)]


def _forward(z, probe, activations, layers, keep):
    """``(f, div, saved)``; ``saved`` (what the backward reads) only when ``keep``, else temporaries
    are overwritten in place. Without a probe (None) only the field: ``div`` is None."""
    folded = [_fold(layer) for layer in layers]
    h, v, r = z, probe, None
    saved = [z, probe]
    for i, (weight, bias) in enumerate(folded):
        weight_t = weight.t()
        a = torch.addmm(bias, h, weight_t) if bias is not None else h @ weight_t
        if probe is not None:
            r = v @ weight_t
        if i == len(layers) - 1:
            break
        h, slope = activations[i].value_and_slope(a)
        if probe is not None:
            v = r * slope if keep else r.mul_(slope)
        if keep:
            saved += [a, h, slope, r, v]
    div = (r * probe).sum(dim=1) if probe is not None else None
    return a, div, (saved + [w for w, _ in folded] if keep else None)


def _fold(layer):
    """``(W', b')`` of ``gate * (x W^T + b) + shift`` as one affine map ``x W'^T + b'``."""
    weight, bias = layer.weight, layer.bias
    if layer.gate is not None:
        gate = layer.gate.reshape(-1)
        weight = weight * gate.unsqueeze(1)
        bias = bias * gate if bias is not None else None
    if layer.shift is not None:
        shift = layer.shift.reshape(-1)
        bias = shift if bias is None else bias + shift
    return weight, bias


def _unfold_grads(layer, a_bar, r_bar, h_in, v_in, needs, grads, at):
    """Gradients of ``W``, ``b``, ``gate``, ``shift`` (into ``grads[at:at + 4]``, where ``needs``)
    from the output cotangents ``a_bar`` (state) and ``r_bar`` (tangent) of the folded layer."""
    gate = layer.gate.reshape(-1) if layer.gate is not None else None
    grad_folded_weight = None
    if needs[0] or (gate is not None and needs[2]):
        grad_folded_weight = _weight_grad(a_bar, h_in, r_bar, v_in)
    grad_folded_bias = a_bar.sum(0) if any(needs[1:]) else None
    if needs[0]:
        grads[at] = grad_folded_weight if gate is None else grad_folded_weight * gate.unsqueeze(1)
    if layer.bias is not None and needs[1]:
        grads[at + 1] = grad_folded_bias if gate is None else grad_folded_bias * gate
    if gate is not None and needs[2]:
        grad_gate = (grad_folded_weight * layer.weight).sum(1)
        if layer.bias is not None:
            grad_gate = grad_gate + grad_folded_bias * layer.bias
        grads[at + 2] = grad_gate.reshape(layer.gate.shape)
    if layer.shift is not None and needs[3]:
        grads[at + 3] = grad_folded_bias.reshape(layer.shift.shape)


__all__ = ["Activation", "AffineLayer", "activation_of", "field_and_hutchinson",
           "field_hutchinson_and_vjp", "plain_linear_tensors"]
