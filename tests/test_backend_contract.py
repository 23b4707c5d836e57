"""The contract every solver backend meets, for every method it lists (BACKENDS): on a linear
field f(z) = A z the flow's log-density is the closed form log N(e^{AT} x) + T tr A, and the
adjoint's gradient with respect to A is the closed form's. A backend added to the table is
tested here without further work."""
import pytest
import torch

from conftest import linear_field
from torchprune_flows.cnf import CNF, FlowNetwork, SolverError, SolverSpec, standard_normal_logprob
from torchprune_flows.cnf.backends import ADAPTIVE_METHODS, BACKENDS, FIXED_METHODS

CASES = [pytest.param(backend, method, id=f"{backend}-{method}")
         for backend, entry in BACKENDS.items() for method in entry.methods]
#: fixed-step methods take 50 steps, adaptive ones run at 1e-9 (low orders looser: at 1e-9 a
#: second-order method needs more than the 10,000-step budget); error bounds by order
STEP = 0.02
FIXED_BOUND = {"euler": 5e-2, "explicit_adams": 1e-3, "implicit_adams": 1e-3}
ADAPTIVE_TOLERANCE = {"adaptive_heun": 1e-6, "fehlberg2": 1e-6, "bosh3": 1e-8}


def _matrix():
    g = torch.Generator().manual_seed(0)
    return 0.5 * torch.randn(3, 3, generator=g, dtype=torch.float64)


def _closed_form(x, A):
    z = x @ torch.linalg.matrix_exp(A).T
    return standard_normal_logprob(z) + torch.trace(A)


def test_every_backend_lists_methods():
    assert set(BACKENDS) >= {"native", "torchdiffeq", "torchdyn"}
    assert all(entry.methods and callable(entry.integrate) for entry in BACKENDS.values())
    # every method a backend lists is one SolverSpec knows as adaptive or fixed-step
    assert all(set(entry.methods) <= set(ADAPTIVE_METHODS + FIXED_METHODS) for entry in BACKENDS.values())


@pytest.mark.parametrize("backend,method", CASES)
def test_log_density_and_adjoint_gradient_match_the_closed_form(backend, method):
    A = _matrix()
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fixed = method in FIXED_METHODS
    tolerance = ADAPTIVE_TOLERANCE.get(method, 1e-9)
    options = dict(step_size=STEP) if fixed else dict(atol=tolerance, rtol=tolerance)
    spec = SolverSpec(backend=backend, method=method, adjoint=True, **options)
    flow = FlowNetwork([CNF(linear_field(A), divergence="exact", solver=spec)], (3,)).double()
    logp = flow.log_prob(x)
    logp.sum().backward()
    (field,) = [m for m in flow.modules() if hasattr(m, "calls")]
    exact_A = A.clone().requires_grad_(True)
    exact = _closed_form(x, exact_A)
    exact.sum().backward()
    bound = FIXED_BOUND.get(method, 1e-4) if fixed else max(1e-6, 100 * tolerance)
    assert torch.allclose(logp, exact.detach(), atol=bound, rtol=bound)
    error = (field.A.grad - exact_A.grad).norm() / exact_A.grad.norm()
    assert error < 10 * bound, f"relative gradient error {error:.2e}"


class _TurnsNonFinite(torch.nn.Module):
    """z' = -z until the time passes ``after``, NaN from there on."""

    def __init__(self, after):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
        self.after = after

    def forward(self, t, z):
        return -self.scale * z * (float("nan") if float(t) > self.after else 1.0)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("after", [0.4, 2.0], ids=["forward", "backward"])
def test_a_solve_that_turns_non_finite_raises_solver_error(backend, after):
    """Whether the backend's own solver checks (``checks_finite``) or the dynamics check every
    evaluation, NaN in the forward solve, or only in the backward one, is a SolverError."""
    method = BACKENDS[backend].methods[0]
    spec = SolverSpec(backend=backend, method=method, adjoint=True, atol=1e-6, rtol=1e-6)
    field = _TurnsNonFinite(after)
    flow = FlowNetwork([CNF(field, divergence="exact", solver=spec)], (3,)).double()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with pytest.raises(SolverError):
        logp = flow.log_prob(x)
        field.after = -1.0  # the backward solve runs into NaN at once
        logp.sum().backward()
