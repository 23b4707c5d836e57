"""The one-pass Hutchinson path for affine stacks against the generic autograd path and finite differences."""
import copy

import pytest
import torch
from torch import nn

from torchprune_flows.cnf import CNF, SolverSpec, twice_differentiable
from torchprune_flows.cnf.activations import ACTIVATIONS, activation_of
from torchprune_flows.cnf.affine_hutchinson import AffineLayer, field_and_hutchinson
from torchprune_flows.cnf.divergence import divergence_hutchinson
from torchprune_flows.networks.concatsquash import ConcatSquashField
from torchprune_flows.networks.mlp import ACTIVATIONS as ACTIVATION_NAMES, MLPField
from torchprune_flows.pruning.masks import set_mask

NAMES = list(ACTIVATION_NAMES)


def _field(kind, activation, dim=3, hidden=6, layers=3):
    torch.manual_seed(0)
    field = (ConcatSquashField(dim, hidden, layers, activation) if kind == "concatsquash"
             else MLPField(dim, hidden, layers, activation)).double()
    with torch.no_grad():  # gates away from 1/2 and non-zero shifts, so that time matters
        for p in field.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return field


def _generic(field, t, z, probe):
    """f and e^T (df/dz) e with the field's own forward and an autograd vector-Jacobian product."""
    f = field(t, z)
    return f, divergence_hutchinson(f, z, create_graph=True, probe=probe)


def _fused(field, t, z, probe):
    stack = field.as_affine_stack(t, z)
    assert stack is not None
    return field_and_hutchinson(*stack, z, probe)


def test_every_activation_of_the_network_families_is_reproduced():
    assert list(ACTIVATION_NAMES) == list(ACTIVATIONS)
    for name, module in ACTIVATION_NAMES.items():
        assert activation_of(module()) is ACTIVATIONS[name]
    # non-default arguments compute another function: the one-pass path does not take them
    assert activation_of(nn.Softplus(beta=2)) is None and activation_of(nn.ELU(alpha=0.5)) is None
    assert activation_of(nn.GELU()) is None


@pytest.mark.parametrize("name", NAMES)
def test_each_activation_s_slope_and_curvature_are_its_derivatives(name):
    activation = ACTIVATIONS[name]
    a = torch.linspace(-3, 3, 13, dtype=torch.double).add(0.01).requires_grad_(True)  # off relu's kink
    value, slope = activation.value_and_slope(a)
    torch.testing.assert_close(value, activation.module()(a))
    (autograd_slope,) = torch.autograd.grad(value.sum(), a, create_graph=True)
    torch.testing.assert_close(slope, autograd_slope)
    if autograd_slope.requires_grad:
        (autograd_curvature,) = torch.autograd.grad(autograd_slope.sum(), a)
    else:  # relu: piecewise linear
        autograd_curvature = torch.zeros_like(a)
    torch.testing.assert_close(activation.curvature(a, value, slope), autograd_curvature)


@pytest.mark.parametrize("kind", ["concatsquash", "mlp"])
@pytest.mark.parametrize("activation", NAMES)
def test_values_and_gradients_equal_the_generic_path(kind, activation):
    field = _field(kind, activation)
    torch.manual_seed(1)
    z = torch.randn(7, 3, dtype=torch.double)
    if activation in ("relu", "elu"):  # keep pre-activations off the kink, where both are defined
        z = z + 0.01
    probe = torch.randn_like(z)
    t = torch.tensor(0.7, dtype=torch.double, requires_grad=True)
    outputs = {}
    for name, evaluate in [("generic", _generic), ("fused", _fused)]:
        zz = z.clone().requires_grad_(True)
        f, div = evaluate(field, t, zz, probe)
        weights = torch.randn_like(f, generator=torch.Generator().manual_seed(2))
        loss = (f * weights).sum() + (div * torch.linspace(-1, 1, len(div), dtype=torch.double)).sum()
        inputs = [zz, t] + list(field.parameters())
        outputs[name] = (f.detach(), div.detach(), torch.autograd.grad(loss, inputs, allow_unused=True))
    (f_g, div_g, grads_g), (f_f, div_f, grads_f) = outputs["generic"], outputs["fused"]
    torch.testing.assert_close(f_f, f_g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(div_f, div_g, rtol=1e-12, atol=1e-12)
    for g_f, g_g in zip(grads_f, grads_g):
        if g_g is None:  # t and the gates of an autonomous MLP
            assert g_f is None or torch.count_nonzero(g_f) == 0
        else:
            torch.testing.assert_close(g_f, g_g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["softplus", "tanh", "swish"])
def test_backward_matches_finite_differences(activation):
    """gradcheck on the function itself: weights, biases, gates and shifts of every layer, and z."""
    torch.manual_seed(3)
    widths = [3, 5, 4, 3]
    layers = [AffineLayer(torch.randn(b, a, dtype=torch.double, requires_grad=True),
                          torch.randn(b, dtype=torch.double, requires_grad=True),
                          torch.rand(1, b, dtype=torch.double).add(0.5).requires_grad_(True),
                          torch.randn(1, b, dtype=torch.double, requires_grad=True))
              for a, b in zip(widths[:-1], widths[1:])]
    act = ACTIVATIONS[activation]
    probe = torch.randn(4, 3, dtype=torch.double)
    z = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    flat = [t for layer in layers for t in layer]

    def function(z, *flat):
        rebuilt = [AffineLayer(*flat[4 * i:4 * i + 4]) for i in range(len(layers))]
        return field_and_hutchinson(rebuilt, [act, act], z, probe)

    assert torch.autograd.gradcheck(function, (z, *flat), eps=1e-6, atol=1e-6)


def test_pruned_weights_get_no_gradient_and_stay_out_of_the_field():
    field = _field("concatsquash", "softplus")
    mask = torch.rand_like(field.layers[1].main.weight) > 0.5
    set_mask(field.layers[1].main, "weight", mask)
    z = torch.randn(5, 3, dtype=torch.double)
    probe = torch.randn_like(z)
    t = torch.tensor(0.2, dtype=torch.double)
    f, div = _fused(field, t, z, probe)
    f_g, div_g = _generic(field, t, z.clone().requires_grad_(True), probe)
    torch.testing.assert_close(f, f_g.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(div, div_g.detach(), rtol=1e-12, atol=1e-12)
    (f.sum() + div.sum()).backward()
    orig = field.layers[1].main.weight_orig
    assert torch.count_nonzero(orig.grad[~mask]) == 0 and torch.count_nonzero(orig.grad[mask]) > 0


def test_modules_it_cannot_reproduce_fall_back_to_the_generic_path():
    field = _field("concatsquash", "softplus")
    z = torch.randn(4, 3, dtype=torch.double)
    assert field.as_affine_stack(0.0, z) is not None
    field.activations[0] = nn.Softplus(beta=2.0)
    assert field.as_affine_stack(0.0, z) is None
    mlp = _field("mlp", "tanh")
    mlp.net[0].register_forward_hook(lambda module, inputs, output: output * 2)
    assert mlp.as_affine_stack(0.0, z) is None


def _block(field, **solver):
    return CNF(field, divergence="hutchinson", solver=SolverSpec(atol=1e-9, rtol=1e-9, **solver),
               train_end_time=True).double()


def _loss_and_grads(block, x):
    block.zero_grad(set_to_none=True)
    torch.manual_seed(4)  # the same probe
    z, delta_logp = block(x)
    loss = (0.5 * z.pow(2).sum(1) + delta_logp).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in block.parameters()], block.nfe_forward, block.nfe_backward


@pytest.mark.parametrize("solver", [dict(adjoint=True), dict(adjoint=True, seminorm=False), dict(adjoint=False)])
def test_a_cnf_block_trains_the_same_on_either_path(solver):
    """Loss, every gradient (dL/dT included) and NFE of an adjoint / backprop solve are unchanged."""
    field = _field("concatsquash", "tanh", dim=2)
    x = torch.randn(16, 2, dtype=torch.double, generator=torch.Generator().manual_seed(5))
    fused = _block(copy.deepcopy(field), **solver)
    generic = _block(copy.deepcopy(field), **solver)
    generic.odefunc.twice_differentiable = True  # the generic path
    results = [_loss_and_grads(b, x) for b in (fused, generic)]
    (loss_f, grads_f, nfe_f, nfe_b), (loss_g, grads_g, nfe_f_g, nfe_b_g) = results
    assert (nfe_f, nfe_b) == (nfe_f_g, nfe_b_g)
    torch.testing.assert_close(loss_f, loss_g, rtol=1e-12, atol=1e-12)
    for g_f, g_g in zip(grads_f, grads_g):
        torch.testing.assert_close(g_f, g_g, rtol=1e-8, atol=1e-12)


def test_second_derivatives_need_the_generic_path():
    """The fused backward is first-order: differentiating it twice raises instead of being silently
    wrong; ``twice_differentiable`` gives Hessian-vector products that match finite differences."""
    field = _field("concatsquash", "softplus", dim=2)
    block = _block(field, adjoint=False)
    x = torch.randn(8, 2, dtype=torch.double)

    def gradient(create_graph):
        torch.manual_seed(6)
        z, delta_logp = block(x)
        loss = (0.5 * z.pow(2).sum(1) + delta_logp).mean()
        return torch.autograd.grad(loss, list(block.parameters()), create_graph=create_graph)

    with pytest.raises(RuntimeError, match="twice_differentiable"):
        grads = gradient(create_graph=True)
        torch.autograd.grad(sum(g.sum() for g in grads), list(block.parameters()), allow_unused=True)
    with twice_differentiable(block):
        grads = gradient(create_graph=True)
        weight = block.vector_field.layers[0].main.weight
        at = next(i for i, p in enumerate(block.parameters()) if p is weight)
        direction = torch.randn_like(weight)
        hvp = torch.autograd.grad(grads[at], weight, direction)[0]
        eps = 1e-5
        with torch.no_grad():
            weight.add_(eps * direction)
        plus = gradient(create_graph=False)[at]
        with torch.no_grad():
            weight.sub_(2 * eps * direction)
        minus = gradient(create_graph=False)[at]
        with torch.no_grad():
            weight.add_(eps * direction)
    # the Hessian is symmetric: d/de <grad, direction> along direction = <direction, H direction>
    assert float((hvp * direction).sum()) == pytest.approx(float(((plus - minus) / (2 * eps) * direction).sum()), rel=1e-4)
