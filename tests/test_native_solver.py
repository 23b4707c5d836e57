"""Our Dormand–Prince integrator and adjoint (``backend: native``, the default for dopri5 adjoint
solves) against torchdiffeq's and against exact solutions; the dynamics' direct vjp against autograd."""
import pytest
import torch
import torchdiffeq
from torch import nn

import torchprune_flows as tf
from torchprune_flows.cnf import SolverError, SolverSpec, cnf_blocks, nfe_counts, set_solver
from torchprune_flows.cnf import runge_kutta
from torchprune_flows.cnf.adjoint import vjp
from torchprune_flows.pruning import count_parameters, prune


class Linear(nn.Module):
    """``f(t, y) = y A^T + sin(3 t)``: non-autonomous, with a closed form for the homogeneous part."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return y @ self.A.T + torch.sin(3 * t)


def _problem(seed=0, dim=5):
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(dim, dim, generator=g, dtype=torch.float64), torch.randn(4, dim, generator=g,
                                                                                       dtype=torch.float64)


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 0.0), (0.0, 2.5)])
def test_dopri5_takes_torchdiffeqs_steps_and_lands_on_the_end(t0, t1):
    A, y0 = _problem()
    ours, theirs = Linear(A), Linear(A)
    with torch.no_grad():
        y1 = runge_kutta.dopri5(ours, y0, t0, t1, atol=1e-8, rtol=1e-6)
        t = torch.tensor([t0, t1], dtype=torch.float64)
        expected = torchdiffeq.odeint(theirs, y0, t, rtol=1e-6, atol=1e-8, method="dopri5",
                                      options={"step_t": t[-1:]})[-1]
    assert ours.calls == theirs.calls
    assert torch.allclose(y1, expected, rtol=0, atol=1e-12)
    # and the autograd path (backprop through the solver) computes the same solve
    y0g = y0.clone().requires_grad_(True)
    assert torch.allclose(runge_kutta.dopri5(Linear(A), y0g, t0, t1, atol=1e-8, rtol=1e-6), y1, rtol=0, atol=1e-13)


def test_dopri5_converges_to_the_exact_solution():
    A, y0 = _problem(seed=1)  # homogeneous: y(1) = y0 e^{A^T}
    with torch.no_grad():
        y1 = runge_kutta.dopri5(lambda t, y: y @ A.T, y0, 0.0, 1.0, atol=1e-12, rtol=1e-12)
    exact = y0 @ torch.linalg.matrix_exp(A).T
    assert (y1 - exact).abs().max().item() < 1e-10


def test_dopri5_stops_runaway_and_non_finite_solves():
    with pytest.raises(SolverError, match="max_num_steps"):
        runge_kutta.dopri5(lambda t, y: -3000.0 * y, torch.ones(3), 0.0, 1.0, 1e-9, 1e-9, max_num_steps=10)
    with pytest.raises(SolverError, match="non-finite"):
        runge_kutta.dopri5(lambda t, y: y * float("nan"), torch.ones(3), 0.0, 1.0, 1e-6, 1e-6)


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 0.0)])
def test_dopri5_quadrature_integrates_beside_the_state_at_the_weighted_stages_only(t0, t1):
    """``quadrature``: the integral of ``q = y B`` along ``y' = y A^T`` against its closed form
    ``(y(t1) - y(t0)) A^{-T} B``; the state takes the same steps as without it, and ``q`` is
    evaluated only where the 5th-order weights need it (first stage, stages 3-6, stage 7 unless last)."""
    A, y0 = _problem(seed=2)
    B = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    asked, calls = [], []

    def func(t, y, integrand):
        asked.append(integrand)
        return y @ A.T, ([y @ B] if integrand else None)

    with torch.no_grad():
        y1, (integral,) = runge_kutta.dopri5(func, y0, t0, t1, 1e-12, 1e-12, quadrature=[y0 @ B])
        plain = runge_kutta.dopri5(lambda t, y: calls.append(t) or y @ A.T, y0, t0, t1, 1e-12, 1e-12)
    assert torch.equal(y1, plain) and len(asked) == len(calls)
    exact = (y1 - y0) @ torch.linalg.inv(A.T) @ B
    assert (integral - exact).abs().max().item() < 1e-10
    steps = (len(calls) - 2) // 6  # f0 and the initial-step probe, then 6 evaluations per step
    assert len(calls) == 2 + 6 * steps  # no rejected step on this smooth problem
    assert sum(asked) == 5 * steps


def test_error_norm_is_the_largest_group_rms():
    x = torch.tensor([3.0, 4.0, 0.0, 1.0, 1.0, 1.0])
    assert runge_kutta.ErrorNorm([(0, 6)])(x) == pytest.approx((28 / 6) ** 0.5)
    assert runge_kutta.ErrorNorm([(0, 2), (2, 6)])(x) == pytest.approx((25 / 2) ** 0.5)


def _tabular(seed=0):
    """A masked, time-dependent concatsquash flow with a learnable end time, in float64."""
    torch.manual_seed(seed)
    net = tf.build_network("ffjord_l2_hm4_f2_softplus", num_classes=3).double()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "gate" in name or "shift" in name:
                param.normal_(0.0, 1.0)
            elif "sqrt_end_time" in name:
                param.fill_(1.2)
    prune(net, "WT", 0.6, count_parameters(net))
    return net


def _gradients(net, x, **solver):
    set_solver(net, **solver)
    net.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    loss = -net.log_prob(x).mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]), nfe_counts(net)


@pytest.mark.parametrize("seminorm", [True, False])
@pytest.mark.parametrize("name,dim", [("tabular", 3), ("ffjord_l3_h16_tanh", 2), ("cnf_l2_h8_softplus", 2)])
def test_native_adjoint_equals_torchdiffeqs(name, dim, seminorm):
    """Same loss, same forward and backward NFE, gradients equal to solver rounding (float64):
    the affine-stack flows take the direct vjp, the exact-divergence flow autograd's."""
    if name == "tabular":
        net = _tabular()
    else:
        torch.manual_seed(0)
        net = tf.build_network(name, num_classes=dim).double()
    x = torch.randn(64, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    options = dict(adjoint=True, seminorm=seminorm, atol=1e-8, rtol=1e-6)
    loss, grads, nfe = _gradients(net, x, backend="native", **options)
    loss_ref, grads_ref, nfe_ref = _gradients(net, x, backend="torchdiffeq", **options)
    assert nfe == nfe_ref
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-12)
    assert ((grads - grads_ref).norm() / grads_ref.norm()).item() < 1e-9


def test_direct_vjp_equals_autograds():
    """The hand-written vjp of a masked concatsquash block with a learnable T (every parameter,
    the state's gradient and the field value) against autograd on the generic path."""
    net = _tabular(seed=4)
    block = cnf_blocks(net)[0]
    dynamics = block.odefunc
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    dynamics.begin_solve(x)
    state = dynamics.pack(x, torch.zeros(16, dtype=torch.float64))
    cotangent = torch.randn_like(state)
    params = tuple(p for p in dynamics.parameters() if p.requires_grad)
    t = torch.tensor(0.37, dtype=torch.float64)
    f, grad_state, grads = dynamics.vjp(t, state, cotangent, params)
    dynamics.twice_differentiable = True  # the generic path: autograd's vector-Jacobian product
    dynamics_vjp = dynamics.vjp
    dynamics.vjp = None
    try:
        f_ref, grad_state_ref, grads_ref = vjp(dynamics, t, state, cotangent, params)
    finally:
        dynamics.vjp = dynamics_vjp
    assert torch.allclose(f, f_ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(grad_state, grad_state_ref, rtol=1e-10, atol=1e-12)
    for name, g, g_ref in zip([n for n, p in dynamics.named_parameters() if p.requires_grad], grads, grads_ref):
        g = torch.zeros_like(g_ref) if g is None else g
        assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12), name


def test_auto_backend_is_native_for_dopri5_adjoint_solves_only():
    assert SolverSpec().resolved_backend == "native"
    assert SolverSpec(adjoint=False).resolved_backend == "torchdiffeq"
    assert SolverSpec(method="rk4").resolved_backend == "torchdiffeq"
    assert SolverSpec(backend="torchdyn").resolved_backend == "torchdyn"
    with pytest.raises(ValueError, match="native backend has no method 'rk4'"):
        SolverSpec(backend="native", method="rk4")
