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

Sparse kernels (issue 21): a layer whose weight is masked by ``torch.nn.utils.prune`` (WT) at a
density of at most :data:`SPARSE_MAX_DENSITY`, with at least :data:`SPARSE_MIN_WIDTH` inputs and
outputs, on the CPU in float32/float64, runs its six products per evaluation (state and tangent
forward, both cotangents back, the weight gradient of each) as CSR products on the mask's nonzero
entries (:class:`SparsePattern`, built once per mask); everything else stays dense. Off with
``TORCHPRUNE_FLOWS_SPARSE_KERNELS=0`` or ``affine_hutchinson.SPARSE_KERNELS = False``.
"""
import os
import warnings
import weakref
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


class MaskedAffineLayer(AffineLayer):
    """An :class:`AffineLayer` whose weight is zero off a fixed mask, computed with sparse kernels:
    ``pattern`` is the mask's :class:`SparsePattern` (the tuple's four tensors are unchanged)."""

    pattern = None


def pattern_of(layer):
    """The :class:`SparsePattern` a layer runs on, or None (dense)."""
    return getattr(layer, "pattern", None)


def with_tensors(layer, *tensors):
    """A layer of ``layer``'s kind (and sparse pattern) with other tensors ``weight, bias, gate, shift``."""
    return _with_pattern(AffineLayer(*tensors), pattern_of(layer))


def _with_pattern(layer, pattern):
    if pattern is None:
        return layer
    out = MaskedAffineLayer(*layer)
    out.pattern = pattern
    return out


#: CSR kernels for WT-masked layers where they pay (module doc); read at every stack build
SPARSE_KERNELS = os.environ.get("TORCHPRUNE_FLOWS_SPARSE_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")
#: where CSR products beat dense ones on this CPU (the per-product timings: README, "Solver cost")
SPARSE_MAX_DENSITY = 0.08
SPARSE_MIN_WIDTH = 256
_PATTERNS = weakref.WeakKeyDictionary()  # module -> (mask, mask version, SparsePattern or None)


class SparsePattern:
    """The CSR structure of a mask (out, in) and of its transpose: ``rows``/``cols`` of the nonzero
    entries in row-major order, ``flat`` their indices in the flattened weight, and the order
    ``t_order`` of the same entries in the transpose's row-major order. Each evaluation gathers the
    ``nnz`` values and wraps them (:meth:`matrix`, :meth:`transposed`) without converting."""

    def __init__(self, mask):
        mask = mask.detach() != 0
        out_features, in_features = mask.shape
        self.shape = (out_features, in_features)
        self.rows, self.cols = mask.nonzero(as_tuple=True)
        self.flat = self.rows * in_features + self.cols
        self.crow = _crow(self.rows, out_features)
        self.t_order = torch.argsort(self.cols * out_features + self.rows)
        self.t_crow = _crow(self.cols, in_features)
        self.t_col = self.rows[self.t_order]

    @property
    def nnz(self):
        return self.flat.numel()

    def values(self, weight):
        """The mask's entries of a dense (out, in) ``weight``, in CSR order."""
        return weight.reshape(-1).index_select(0, self.flat)

    def matrix(self, values):
        return _csr(self.crow, self.cols, values, self.shape)

    def transposed(self, values):
        return _csr(self.t_crow, self.t_col, values.index_select(0, self.t_order), self.shape[::-1])

    def dense(self, values):
        """The (out, in) dense tensor with ``values`` on the mask, zeros elsewhere."""
        return values.new_zeros(self.shape[0] * self.shape[1]).index_copy_(0, self.flat, values).view(self.shape)

    def row_sums(self, values):
        return values.new_zeros(self.shape[0]).index_add_(0, self.rows, values)


def _crow(rows, count):
    crow = rows.new_zeros(count + 1)
    torch.cumsum(torch.bincount(rows, minlength=count), 0, out=crow[1:])
    return crow


def _csr(crow, col, values, shape):
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are tested
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def sparse_pattern(module, weight):
    """The :class:`SparsePattern` of ``module``'s weight mask when its layer should run on sparse
    kernels (module doc: WT mask, density, width, CPU, float32/64, switched on), else None. Built
    once per mask: a new mask (pruning again) or one changed in place builds it again."""
    if (not SPARSE_KERNELS or weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.float64)
            or weight.dim() != 2 or min(weight.shape) < SPARSE_MIN_WIDTH):
        return None
    mask = getattr(module, "weight_mask", None)
    if mask is None or mask.shape != weight.shape:
        return None
    cached = _PATTERNS.get(module)
    if cached is not None and cached[0] is mask and cached[1] == mask._version:
        return cached[2]
    density = torch.count_nonzero(mask).item() / mask.numel()
    pattern = SparsePattern(mask) if density <= SPARSE_MAX_DENSITY else None
    _PATTERNS[module] = (mask, mask._version, pattern)
    return pattern


def linear_layer(module, gate=None, shift=None):
    """The :class:`AffineLayer` of an ``nn.Linear`` (:func:`plain_linear_tensors`) with ``gate`` and
    ``shift``, a :class:`MaskedAffineLayer` where sparse kernels pay; None where this path does not
    reproduce the module."""
    tensors = plain_linear_tensors(module)
    if tensors is None:
        return None
    return _with_pattern(AffineLayer(*tensors, gate, shift), sparse_pattern(module, tensors[0]))


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
    patterns = tuple(pattern_of(layer) for layer in layers)
    return _AffineStackWithProbe.apply(z, probe, tuple(activations), patterns, *flat)


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
    def forward(ctx, z, probe, activations, patterns, *flat):
        f, div, saved = _forward(z, probe, activations, _layers(flat, patterns), keep=True)
        ctx.save_for_backward(*saved, *flat)  # the layers' tensors too: torch checks them for in-place changes
        ctx.activations, ctx.patterns, ctx.num_saved = activations, patterns, len(saved)
        return f, div

    @staticmethod
    def backward(ctx, grad_f, grad_div):
        if torch.is_grad_enabled():  # create_graph=True: refuse rather than miss second-order terms
            raise RuntimeError(FIRST_ORDER_ONLY)
        saved, flat = ctx.saved_tensors[:ctx.num_saved], ctx.saved_tensors[ctx.num_saved:]
        grad_z, grads = _backward(saved, _layers(flat, ctx.patterns), ctx.activations, grad_f, grad_div,
                                  ctx.needs_input_grad[0], ctx.needs_input_grad[4:])
        return (grad_z, None, None, None, *grads)


def field_hutchinson_and_vjp(layers, activations, z, probe, grad_f, grad_div, needs):
    """``(f, div, grad_z, grads)`` without autograd: the stack's value and estimate at ``z``, and
    the gradients of ``<grad_f, f> + <grad_div, div>`` w.r.t. ``z`` and each tensor of ``layers``
    (flattened as ``(weight, bias, gate, shift)`` per layer; None where ``needs`` says no). What an
    adjoint solve asks of every backward evaluation, in one forward and one backward pass.
    A masked layer's weight gradient is zero off its mask (what the mask lets through)."""
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
        layer, weight, pattern = layers[i], folded_weights[i], pattern_of(layers[i])
        if pattern is None:
            def times(rows, weight=weight):
                return _times(rows, weight)
        else:  # rows @ W' = (W'^T rows^T)^T with W'^T in CSR
            def times(rows, weight_t=pattern.transposed(weight)):
                return torch.mm(weight_t, rows.t()).t()
        h_in, v_in = (z, probe) if i == 0 else (hidden[i - 1][1], hidden[i - 1][4])
        _unfold_grads(layer, pattern, a_bar, r_bar, h_in, v_in, needs[4 * i:4 * i + 4], grads, 4 * i)
        if i == 0:
            if needs_z:
                grad_z = times(a_bar)
            break
        h_bar = times(a_bar)
        # through h = act(a) and v = act'(a) r of the layer below
        a, h, slope, r, _ = hidden[i - 1]
        if r_bar is None:
            a_bar = h_bar.mul_(slope)
            continue
        v_bar = times(r_bar)
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


def _sparse_weight_grad(pattern, a_bar, h_in, r_bar, v_in):
    """:func:`_weight_grad` on the mask's entries only (CSR order): sampled products."""
    grad = torch.sparse.sampled_addmm(pattern.matrix(a_bar.new_zeros(pattern.nnz)), a_bar.t(), h_in, beta=0.0)
    if r_bar is not None:
        grad = torch.sparse.sampled_addmm(grad, r_bar.t(), v_in)
    return grad.values()


def _layers(flat, patterns):
    """The :class:`AffineLayer` list of the flat ``(weight, bias, gate, shift, ...)`` sequence."""
    return [_with_pattern(AffineLayer(*flat[4 * i:4 * i + 4]), pattern) for i, pattern in enumerate(patterns)]


def _forward(z, probe, activations, layers, keep):
    """``(f, div, saved)``; ``saved`` (what the backward reads) only when ``keep``, else temporaries
    are overwritten in place. Without a probe (None) only the field: ``div`` is None. A sparse
    layer's folded weight is kept as its mask's values (CSR order), a dense one's as a matrix."""
    h, v, r = z, probe, None
    saved, folded_weights = [z, probe], []
    for i, layer in enumerate(layers):
        pattern = pattern_of(layer)
        weight, bias = _fold(layer, pattern)
        folded_weights.append(weight)
        if pattern is None and weight.shape[0] >= NARROW_COLUMNS:
            weight_t = weight.t()
            a = torch.addmm(bias, h, weight_t) if bias is not None else h @ weight_t
            if probe is not None:
                r = v @ weight_t
        else:  # h @ W^T as (W h^T)^T, stored transposed: a CSR W' needs it, a narrow W is 3x faster
            matrix = weight if pattern is None else pattern.matrix(weight)
            a = (torch.addmm(bias.unsqueeze(1), matrix, h.t()) if bias is not None else torch.mm(matrix, h.t())).t()
            if probe is not None:
                r = torch.mm(matrix, v.t()).t()
        if i == len(layers) - 1:
            a = a.contiguous()  # the field leaves in the usual layout (a no-op unless transposed above)
            break
        h, slope = activations[i].value_and_slope(a)
        if probe is not None:
            v = r * slope if keep else r.mul_(slope)
        if keep:
            saved += [a, h, slope, r, v]
    div = (r * probe).sum(dim=1) if probe is not None else None
    return a, div, (saved + folded_weights if keep else None)


def _fold(layer, pattern=None):
    """``(W', b')`` of ``gate * (x W^T + b) + shift`` as one affine map ``x W'^T + b'`` (``W'`` as
    the values on ``pattern`` where there is one)."""
    weight, bias = layer.weight, layer.bias
    if pattern is not None:
        weight = pattern.values(weight)
    if layer.gate is not None:
        gate = layer.gate.reshape(-1)
        weight = weight * (gate.unsqueeze(1) if pattern is None else gate.index_select(0, pattern.rows))
        bias = bias * gate if bias is not None else None
    if layer.shift is not None:
        shift = layer.shift.reshape(-1)
        bias = shift if bias is None else bias + shift
    return weight, bias


def _unfold_grads(layer, pattern, a_bar, r_bar, h_in, v_in, needs, grads, at):
    """Gradients of ``W``, ``b``, ``gate``, ``shift`` (into ``grads[at:at + 4]``, where ``needs``)
    from the output cotangents ``a_bar`` (state) and ``r_bar`` (tangent) of the folded layer. On a
    sparse ``pattern`` the weight's gradient is found on the mask only (zero elsewhere: the mask
    multiplies it on its way to ``weight_orig``), and so is the gate's, where ``W`` is nonzero."""
    gate = layer.gate.reshape(-1) if layer.gate is not None else None
    grad_folded_weight = None
    if needs[0] or (gate is not None and needs[2]):
        grad_folded_weight = (_weight_grad(a_bar, h_in, r_bar, v_in) if pattern is None
                              else _sparse_weight_grad(pattern, a_bar, h_in, r_bar, v_in))
    grad_folded_bias = a_bar.sum(0) if any(needs[1:]) else None
    if needs[0]:
        if pattern is None:
            grads[at] = grad_folded_weight if gate is None else grad_folded_weight * gate.unsqueeze(1)
        else:
            grads[at] = pattern.dense(grad_folded_weight if gate is None
                                      else grad_folded_weight * gate.index_select(0, pattern.rows))
    if layer.bias is not None and needs[1]:
        grads[at + 1] = grad_folded_bias if gate is None else grad_folded_bias * gate
    if gate is not None and needs[2]:
        if pattern is None:
            grad_gate = (grad_folded_weight * layer.weight).sum(1)
        else:
            grad_gate = pattern.row_sums(grad_folded_weight * pattern.values(layer.weight))
        if layer.bias is not None:
            grad_gate = grad_gate + grad_folded_bias * layer.bias
        grads[at + 2] = grad_gate.reshape(layer.gate.shape)
    if layer.shift is not None and needs[3]:
        grads[at + 3] = grad_folded_bias.reshape(layer.shift.shape)


__all__ = ["Activation", "AffineLayer", "MaskedAffineLayer", "SPARSE_KERNELS", "SPARSE_MAX_DENSITY",
           "SPARSE_MIN_WIDTH", "SparsePattern", "activation_of", "field_and_hutchinson", "field_hutchinson_and_vjp",
           "linear_layer", "pattern_of", "plain_linear_tensors", "sparse_pattern", "with_tensors"]
