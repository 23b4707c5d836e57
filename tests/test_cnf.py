"""The CNF core against closed forms: a linear vector field f(z) = A z has
z(T) = e^{AT} x and log p(x) = log N(e^{AT} x; 0, I) + T tr A."""
import math

import pytest
import torch

from conftest import linear_field
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec, nfe_counts, set_solver, standard_normal_logprob


def _matrix(dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(dim, dim, generator=g, dtype=torch.float64))


def _analytic_logp(x, A, T):
    z = x @ torch.linalg.matrix_exp(A * T).T
    return z, standard_normal_logprob(z) + T * torch.trace(A)


def _flow(A, divergence, end_time=1.0, train_end_time=False, **solver):
    spec = SolverSpec(**{"atol": 1e-9, "rtol": 1e-9, **solver})
    cnf = CNF(linear_field(A), divergence=divergence, solver=spec, end_time=end_time, train_end_time=train_end_time)
    return FlowNetwork([cnf], (A.shape[0],)).double()


@pytest.mark.parametrize("backend", ["native", "torchdiffeq", "torchdyn"])
def test_exact_divergence_gives_analytic_log_density(backend):
    A = _matrix()
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    flow = _flow(A, "exact", backend=backend)
    out = flow(x)
    z_true, logp_true = _analytic_logp(x, A, 1.0)
    assert torch.allclose(out["z"], z_true, atol=1e-6)
    assert torch.allclose(flow.log_prob(x), logp_true, atol=1e-6)


def test_learnable_end_time_scales_the_flow():
    A = _matrix(seed=3)
    x = torch.randn(8, 3, dtype=torch.float64)
    flow = _flow(A, "exact", end_time=2.0, train_end_time=True)
    _, logp_true = _analytic_logp(x, A, 2.0)
    logp = flow.log_prob(x)
    assert torch.allclose(logp, logp_true, atol=1e-6)
    # d log p / dT = d/dT [log N(e^{AT}x)] + tr A, checked by finite differences in T
    (sqrt_t,) = [p for n, p in flow.named_parameters() if n.endswith("sqrt_end_time")]
    logp.sum().backward()
    eps = 1e-4
    s = math.sqrt(2.0)
    fd = (_analytic_logp(x, A, (s + eps) ** 2)[1].sum() - _analytic_logp(x, A, (s - eps) ** 2)[1].sum()) / (2 * eps)
    assert sqrt_t.grad.item() == pytest.approx(fd.item(), rel=1e-4)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(probe):
    A = _matrix(seed=2)
    n = 20000
    x = torch.randn(1, 3, dtype=torch.float64).repeat(n, 1)
    flow = _flow(A, "hutchinson", atol=1e-7, rtol=1e-7)
    flow.chain[0].odefunc.probe_kind = probe
    torch.manual_seed(0)
    out = flow(x)
    # with a linear field each sample's estimate is exactly -T e^T A e
    sym = 0.5 * (A + A.T)
    var = 2 * (sym**2).sum() if probe == "gaussian" else 2 * ((sym**2).sum() - (torch.diag(sym) ** 2).sum())
    tolerance = 5 * math.sqrt(var.item() / n)
    assert out["delta_logp"].mean().item() == pytest.approx(-torch.trace(A).item(), abs=tolerance)
    assert out["delta_logp"].std().item() > 0  # really stochastic: not the exact trace in disguise


def test_hutchinson_probe_is_fixed_within_a_solve():
    """With one probe per solve, every sample's estimate is exactly -T e^T A e for its own e."""
    A = _matrix(seed=4)
    flow = _flow(A, "hutchinson")
    x = torch.randn(32, 3, dtype=torch.float64)
    out = flow(x)
    e = flow.chain[0].odefunc.probe
    expected = -torch.einsum("bi,ij,bj->b", e, A, e)
    assert torch.allclose(out["delta_logp"].reshape(-1), expected, atol=1e-6)


def test_sampling_inverts_the_density_direction():
    A = _matrix(seed=5)
    flow = _flow(A, "exact")
    z = torch.randn(10, 3, dtype=torch.float64)
    x = flow.sample(10, z=z)
    assert torch.allclose(x, z @ torch.linalg.matrix_exp(-A).T, atol=1e-6)
    assert torch.allclose(flow(x)["z"], z, atol=1e-6)


@pytest.mark.parametrize("adjoint,seminorm", [(True, False), (True, True), (False, False)])
def test_gradients_agree_across_gradient_modes(adjoint, seminorm):
    A = _matrix(seed=6)
    x = torch.randn(8, 3, dtype=torch.float64)
    reference = _flow(A, "exact", adjoint=False)
    (-reference.log_prob(x).mean()).backward()
    flow = _flow(A, "exact", adjoint=adjoint, seminorm=seminorm)
    (-flow.log_prob(x).mean()).backward()
    g_ref = reference.chain[0].vector_field.A.grad
    assert torch.allclose(flow.chain[0].vector_field.A.grad, g_ref, atol=1e-6)
    # and against the analytic gradient of -mean log p
    A_param = A.clone().requires_grad_(True)
    (-_analytic_logp(x, A_param, 1.0)[1].mean()).backward()
    assert torch.allclose(g_ref, A_param.grad, atol=1e-6)
    assert nfe_counts(flow)["backward"] > 0


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="unknown solver backend"):
        SolverSpec(backend="scipy")
    with pytest.raises(ValueError, match="unknown solver method"):
        SolverSpec(method="dopri7")
    with pytest.raises(ValueError, match="unknown divergence"):
        CNF(linear_field(_matrix()), divergence="trace")


def test_a_divergence_estimator_is_one_function_and_one_table_entry(monkeypatch):
    """A new estimator registered in the table is usable by name: here the trace of A computed
    directly, which gives the closed-form log-density."""
    from torchprune_flows.cnf.divergence import DIVERGENCES, Estimator

    def trace_of_a(f, z, create_graph, probe=None):
        return torch.trace(field.A).expand(f.shape[0])

    monkeypatch.setitem(DIVERGENCES, "trace_of_a", Estimator(trace_of_a))
    A = _matrix()
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    flow = _flow(A, "trace_of_a", adjoint=False)
    field = flow.chain[0].vector_field
    _, expected = _analytic_logp(x, A, 1.0)
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-6)


def test_builtin_layers_and_fields_follow_the_stated_protocols():
    import torchprune_flows as tf
    from torchprune_flows.cnf import FlowLayer, VectorField, cnf_blocks
    from torchprune_flows.pruning import PrunableField

    net = tf.build_network("ffjord_multiscale_mnist", image_size=8, hidden=(4,), blocks=1)
    layers = [m for stage in net.chain for m in stage.layers]
    assert all(isinstance(layer, FlowLayer) for layer in layers)
    for block in cnf_blocks(net):
        assert isinstance(block.vector_field, VectorField) and isinstance(block.vector_field, PrunableField)
    x = torch.rand(2, 1, 8, 8)
    y, delta_logp = net.chain[0](x, torch.zeros(2))
    assert delta_logp.shape == (2,)
    back, _ = net.chain[0](y, delta_logp, reverse=True)  # (a new Hutchinson probe: delta_logp differs)
    assert torch.allclose(back, x, atol=1e-3)


def test_seminorm_adjoint_is_the_default_and_matches_the_plain_adjoint():
    """The default backward pass (seminorm) gives the plain adjoint's gradients within tolerance
    on a time-dependent, pruned, multi-block flow (fixed Hutchinson probes via the seed)."""
    import torchprune_flows as tf
    from torchprune_flows.pruning import count_parameters, prune

    assert SolverSpec().seminorm and SolverSpec().adjoint
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l1_hm2_f2_softplus", num_classes=5, atol=1e-6, rtol=1e-6)
    prune(net, "WT", 0.5, count_parameters(net))
    x = torch.randn(64, 5)
    grads = {}
    for seminorm in (True, False):
        set_solver(net, seminorm=seminorm)
        net.zero_grad()
        torch.manual_seed(1)
        (-net.log_prob(x).mean()).backward()
        grads[seminorm] = torch.cat([p.grad.flatten() for p in net.parameters()])
    relative = (grads[True] - grads[False]).norm() / grads[False].norm()
    assert relative < 1e-4, relative
