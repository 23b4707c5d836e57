"""A failing solve is a SolverError on every backend, in the forward and in the backward pass."""
import pytest
import torch
from torch import nn

from conftest import NaNGradient
from torchprune_flows.cnf import CNF, SolverError, SolverSpec, backward


class Stiff(nn.Module):
    """dz/dt = -k z: an explicit solver needs about k steps, so a small step budget fails."""

    def __init__(self, k):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(float(k)))

    def forward(self, t, z):
        return -self.k * z


class NaNInTheBackwardPass(nn.Module):
    """A finite field whose parameter gradient is NaN: only the adjoint solve sees it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(-0.5))

    def forward(self, t, z):
        return NaNGradient.apply(self.a) * z


@pytest.mark.parametrize("backend", ["native", "torchdiffeq", "torchdyn"])
def test_too_many_steps_stops_the_solve_on_every_backend(backend):
    """torchdyn has no step limit of its own: it used to run on for ever (issue 12)."""
    solver = SolverSpec(backend=backend, method="dopri5", atol=1e-9, rtol=1e-9, max_num_steps=20, adjoint=False)
    cnf = CNF(Stiff(2000.0), divergence="none", solver=solver)
    with pytest.raises(SolverError, match=r"max_num_steps exceeded"):  # ours or torchdiffeq's own
        cnf(torch.ones(4, 2))
    assert cnf.odefunc.num_evals <= 7 * 20 + 9


def test_the_same_solve_within_its_budget_succeeds():
    solver = SolverSpec(method="dopri5", atol=1e-6, rtol=1e-6, max_num_steps=1000, adjoint=False)
    z, _ = CNF(Stiff(3.0), divergence="none", solver=solver)(torch.ones(4, 2))
    assert torch.allclose(z, torch.full((4, 2), torch.exp(torch.tensor(-3.0)).item()), rtol=1e-4)


@pytest.mark.parametrize("seminorm", [True, False])
def test_a_failing_adjoint_solve_raises_solver_error_from_backward(seminorm):
    cnf = CNF(NaNInTheBackwardPass(), divergence="none", solver=SolverSpec(adjoint=True, seminorm=seminorm))
    z, _ = cnf(torch.ones(3, 2))
    assert torch.isfinite(z).all()  # the forward pass is fine
    loss = z.pow(2).sum()
    try:
        backward(loss)
    except SolverError as err:
        assert "backward (adjoint) pass" in str(err) and "tensor(" not in str(err)
    else:  # the solve got through: then the NaN reached the gradient, which the runner checks
        assert not torch.isfinite(cnf.odefunc.vector_field.a.grad)
