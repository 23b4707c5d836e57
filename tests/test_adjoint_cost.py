"""The adjoint's cost and accuracy on time-dependent fields with a learnable end time.

Adjoint solves treat the time s as a constant of the vector field; the plain adjoint also the
end time T, and gets dL/dT from the boundary term ``<dL/dz(T), F(T, z(T))>`` (see
``AugmentedDynamics.forward`` and ``EndTimeBoundary``). These tests check that the gradients still match backprop through the
solver at tight tolerance, and that the backward solve no longer pays for the time gradient.
"""
import pytest
import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec, nfe_counts, set_solver

TIGHT = dict(atol=1e-11, rtol=1e-11)
DEFAULT_TABULAR = dict(atol=1e-8, rtol=1e-6)


def _time_dependent_flow(seed=0, end_time=1.3):
    """Two concatsquash CNF blocks over R^4 (float64) with a markedly time-dependent field:
    the time gates and shifts get weights of order one, and T = 1.3 is learnable."""
    torch.manual_seed(seed)
    net = tf.build_network("ffjord_l1_hm2_f2_softplus", num_classes=4).double()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "gate" in name or "shift" in name:
                param.normal_(0.0, 1.0)
            elif "sqrt_end_time" in name:
                param.fill_(end_time ** 0.5)
    return net


def _data(n=64, dim=4, seed=1):
    return torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _gradients(net, loss_fn, **solver):
    set_solver(net, **solver)
    net.zero_grad(set_to_none=True)
    torch.manual_seed(2)  # the same Hutchinson probes in every mode
    loss_fn(net).backward()
    return ({name: p.grad.detach().clone() for name, p in net.named_parameters() if p.grad is not None},
            nfe_counts(net))


def _relative(grads, reference, names=None):
    names = names or list(reference)
    a = torch.cat([grads[n].flatten() for n in names])
    b = torch.cat([reference[n].flatten() for n in names])
    return ((a - b).norm() / b.norm()).item()


def _nll(x):
    return lambda net: -net.log_prob(x).mean()


@pytest.mark.parametrize("backend", ["native", "torchdiffeq", "torchdyn"])
@pytest.mark.parametrize("seminorm", [True, False])
@pytest.mark.parametrize("tolerances,bound", [(TIGHT, 1e-7), (DEFAULT_TABULAR, 1e-5)],
                         ids=["tight", "tabular-default"])
def test_adjoint_gradients_match_backprop_at_tight_tolerance(seminorm, tolerances, bound, backend):
    net = _time_dependent_flow()
    loss = _nll(_data())
    reference, _ = _gradients(net, loss, adjoint=False, **TIGHT)
    grads, nfe = _gradients(net, loss, adjoint=True, seminorm=seminorm, backend=backend, **tolerances)
    end_times = [n for n in reference if n.endswith("sqrt_end_time")]
    assert len(end_times) == 2 and all(reference[n].abs() > 1e-3 for n in end_times)
    assert _relative(grads, reference) < bound
    assert _relative(grads, reference, end_times) < bound  # dL/dT from the boundary term
    assert nfe["backward"] > 0


@pytest.mark.parametrize("seminorm", [True, False])
def test_end_time_gradient_in_the_sampling_direction(seminorm):
    """Through ``inverse`` the solve starts at T: the plain adjoint's boundary term is
    dL/dT = -<dL/dy(T), F(T, y(T))>; the seminorm adjoint integrates dL/dT."""
    net = _time_dependent_flow(seed=3)
    z = _data(seed=4)

    def loss(model):
        return model.inverse(z).pow(2).sum(1).mean()

    reference, _ = _gradients(net, loss, adjoint=False, **TIGHT)
    grads, _ = _gradients(net, loss, adjoint=True, seminorm=seminorm, **TIGHT)
    end_times = [n for n in reference if n.endswith("sqrt_end_time")]
    assert _relative(grads, reference, end_times) < 1e-7
    assert _relative(grads, reference) < 1e-7


def test_torchdyn_adjoint_gets_the_end_time_gradient():
    net = _time_dependent_flow(seed=5)
    loss = _nll(_data(seed=6))
    reference, _ = _gradients(net, loss, adjoint=False, **TIGHT)
    grads, _ = _gradients(net, loss, adjoint=True, backend="torchdyn", atol=1e-10, rtol=1e-10)
    assert _relative(grads, reference) < 1e-6


@pytest.mark.parametrize("seminorm,extra", [(True, 0), (False, 1)])
def test_learnable_end_time_costs_at_most_one_backward_evaluation(seminorm, extra):
    """dL/dT no longer steers the adjoint's steps. Under the seminorm it is a free adjoint
    parameter (outside the error norm): training T costs nothing. The plain adjoint holds T
    constant in the solve and adds the boundary term: exactly one evaluation per block."""
    net = _time_dependent_flow()
    loss = _nll(_data())
    spec = dict(adjoint=True, seminorm=seminorm, **DEFAULT_TABULAR)
    _, trained = _gradients(net, loss, **spec)
    for name, param in net.named_parameters():
        if name.endswith("sqrt_end_time"):
            param.requires_grad_(False)
    _, frozen = _gradients(net, loss, **spec)
    assert trained["forward"] == frozen["forward"]
    assert trained["backward"] == frozen["backward"] + 2 * extra  # two blocks


class TimeOnlyField(nn.Module):
    """``f(t, z) = a * sigmoid(w t + c) + b t``: time-dependent, independent of z."""

    def __init__(self, dim):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Parameter(torch.randn(dim, generator=g))
        self.w = nn.Parameter(3.0 * torch.randn(dim, generator=g))
        self.c = nn.Parameter(torch.randn(dim, generator=g))
        self.b = nn.Parameter(torch.randn(dim, generator=g))

    def forward(self, t, z):
        return (self.a * torch.sigmoid(self.w * t + self.c) + self.b * t).expand_as(z)


def test_seminorm_backward_cost_does_not_depend_on_the_loss_scale():
    """Hand-checkable: for a field independent of z, the adjoint a = dL/dz is constant in time
    (da/dt = -a df/dz = 0), so every dopri5 stage of the backward solve sees the same zero
    derivative for it and its local error estimate is exactly zero; the reversed state z obeys
    the same ODE whatever the loss. With a seminorm the step sizes, hence NFE-B, cannot depend on
    the scale K of the loss K * sum z(T). They did while the time gradient -a . df/dt (which
    scales with K) sat in torchdiffeq's error norm: before the fix, 1e6 times the loss took 98
    backward evaluations instead of 68. The bound: NFE-B at K = 1e6 equals NFE-B at K = 1.
    (torchdiffeq only: torchdyn's adjoint cannot differentiate a field that ignores the state,
    and its seminorm leaves the time gradient out of the error norm anyway.)"""
    dim = 3
    spec = SolverSpec(method="dopri5", atol=1e-6, rtol=1e-6, adjoint=True, seminorm=True)
    flow = FlowNetwork([CNF(TimeOnlyField(dim), divergence="none", solver=spec, end_time=1.5,
                            train_end_time=True)], (dim,)).double()
    x = _data(n=8, dim=dim)
    counts = {}
    for scale in (1.0, 1e6):
        flow.zero_grad()
        (scale * flow(x)["z"].sum()).backward()
        counts[scale] = nfe_counts(flow)
        assert all(torch.isfinite(p.grad).all() for p in flow.parameters())
    assert counts[1.0] == counts[1e6]


def test_plain_adjoint_end_time_gradient_is_the_boundary_term():
    """Hand-checkable: d/dT sum z(T) = B * sum f(T) exactly (z(T) = x + int_0^T f), which the
    boundary term gives without integrating anything; d/d sqrt_T = 2 sqrt_T d/dT."""
    dim = 3
    spec = SolverSpec(method="dopri5", atol=1e-6, rtol=1e-6, adjoint=True, seminorm=False)
    flow = FlowNetwork([CNF(TimeOnlyField(dim), divergence="none", solver=spec, end_time=1.5,
                            train_end_time=True)], (dim,)).double()
    x = _data(n=8, dim=dim)
    flow(x)["z"].sum().backward()
    (sqrt_t,) = [p for n, p in flow.named_parameters() if n.endswith("sqrt_end_time")]
    with torch.no_grad():
        expected = len(x) * flow.chain[0].vector_field(sqrt_t ** 2, x[:1]).sum() * 2 * sqrt_t
    assert sqrt_t.grad.item() == pytest.approx(expected.item(), rel=1e-10)


def test_torchdyn_backend_runs_the_adjoint_it_is_asked_for():
    """Our adjoint on torchdyn's solver honours ``seminorm`` (torchdyn 1.0.6's own adjoint
    hard-codes the seminorm, so ``seminorm=False`` used to give bitwise the same gradients and
    NFE): the two error norms take different backward steps, and both give the backprop gradient
    (dL/dT included) to the tolerance."""
    net = _time_dependent_flow(seed=7)
    loss = _nll(_data(seed=8))
    reference, _ = _gradients(net, loss, adjoint=False, **TIGHT)
    end_times = [n for n in reference if n.endswith("sqrt_end_time")]
    options = dict(adjoint=True, backend="torchdyn", **DEFAULT_TABULAR)
    seminorm, nfe_seminorm = _gradients(net, loss, seminorm=True, **options)
    plain, nfe_plain = _gradients(net, loss, seminorm=False, **options)
    assert nfe_plain["forward"] == nfe_seminorm["forward"]
    assert nfe_plain["backward"] != nfe_seminorm["backward"]
    assert not all(torch.equal(plain[name], seminorm[name]) for name in seminorm)
    for grads in (seminorm, plain):
        assert _relative(grads, reference) < 1e-6
        assert _relative(grads, reference, end_times) < 1e-6


@pytest.mark.parametrize("backend", ["native", "torchdiffeq", "torchdyn"])
def test_adjoint_tolerance_factor_loosens_only_the_backward_solve(backend):
    """``adjoint_tol_factor`` scales the backward solve's tolerances: the forward pass (its NFE and
    its loss) is untouched, the backward solve takes fewer steps, and the gradient stays within
    the looser tolerance of backprop at tight tolerance."""
    net = _time_dependent_flow(seed=3)
    loss = _nll(_data(seed=4))
    reference, _ = _gradients(net, loss, adjoint=False, **TIGHT)
    options = dict(adjoint=True, backend=backend, atol=1e-8, rtol=1e-8)
    same, nfe_same = _gradients(net, loss, adjoint_tol_factor=1.0, **options)
    loose, nfe_loose = _gradients(net, loss, adjoint_tol_factor=100.0, **options)
    assert nfe_loose["forward"] == nfe_same["forward"]
    assert nfe_loose["backward"] < nfe_same["backward"]
    assert _relative(same, reference) < 1e-7
    assert 1e-9 < _relative(loose, reference) < 1e-5


def test_adjoint_tolerance_factor_must_be_positive():
    with pytest.raises(ValueError, match="adjoint_tol_factor"):
        SolverSpec(adjoint_tol_factor=0)
