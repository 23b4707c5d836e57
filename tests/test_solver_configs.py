"""Solver-sweep configs (supplement S7) and fixed-step solvers that end at the final time.

The fixed-step NFE = stages x steps check against an independent call count (both backends,
adjoint and backprop) lives in ``tests/test_nfe.py``; here the *state* a fixed-step solve
returns is checked against the closed form of a linear field, dz/dt = A z: z(1) = e^A z(0).
"""
import glob
import os

import pytest
import torch

from conftest import REPO_ROOT, linear_field
from torchprune_flows.runner.cli import check_names
from torchprune_flows.runner.config import expand_customizations, load_config
from torchprune_flows.cnf import CNF, SolverSpec, cnf_blocks
from torchprune_flows.registry import NETWORKS

SOLVER_CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "experiment_configs", "ffjord", "solvers", "*.yaml")))
SUFFIXES = {  # suffix -> (method, adjoint)
    "dopri_adjoint": ("dopri5", True), "dopri_autograd": ("dopri5", False),
    "rk4_adjoint": ("rk4", True), "rk4_autograd": ("rk4", False),
    "euler_adjoint": ("euler", True), "euler_autograd": ("euler", False),
}
TOYS = {"gaussians": ("ToyGaussians", "ffjord_l2_h128_sigmoid"),
        "gaussiansspiral": ("ToyGaussiansSpiral", "ffjord_l4_h64_sigmoid"),
        "spirals": ("ToySpirals2", "ffjord_l4_h64_sigmoid")}


def test_the_toy_solver_sweeps_are_shipped():
    assert {f"experiment_configs/ffjord/solvers/{name}.yaml" for name in TOYS} <= set(SOLVER_CONFIGS)


@pytest.mark.parametrize("path", SOLVER_CONFIGS)
def test_solver_sweep_config_resolves_every_suffix(path, in_repo):
    cfg = load_config(path, [])
    stem = os.path.splitext(os.path.basename(path))[0]
    expanded = expand_customizations(cfg)
    names = [variant["network"]["name"] for _, variant in expanded]
    assert len(names) == len(SUFFIXES) == len(set(names))
    dataset, base = TOYS.get(stem, (cfg["network"]["dataset"], names[0].rsplit("_", 2)[0]))
    assert sorted(names) == sorted(f"{base}_{suffix}" for suffix in SUFFIXES)
    for label, variant in expanded:
        check_names(variant)
        assert variant["network"]["dataset"] == dataset and label == f"network.name={variant['network']['name']}"
        net = NETWORKS.get(variant["network"]["name"])(num_classes=variant["network"]["outputSize"])
        method, adjoint = SUFFIXES[variant["network"]["name"][len(base) + 1:]]
        (block,) = cnf_blocks(net)
        assert (block.solver.method, block.solver.adjoint) == (method, adjoint)
    if stem in TOYS:  # the sweep keeps the shape and training of the toy's own config
        toy = load_config(f"experiment_configs/ffjord/{stem}.yaml", [])
        assert toy["network"]["name"].startswith(base + "_")
        assert cfg["training"] == toy["training"] and cfg["experiments"] == toy["experiments"]


def _linear_problem():
    g = torch.Generator().manual_seed(0)
    A = 0.5 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    return A, torch.randn(16, 3, generator=g, dtype=torch.float64)


def _solve(method, backend, step, adjoint=True, reverse=False):
    """(z(1) of the solve, e^{±A} z0, the CNF block) for dz/dt = A z."""
    A, z0 = _linear_problem()
    cnf = CNF(linear_field(A), divergence="none",
              solver=SolverSpec(backend=backend, method=method, step_size=step, adjoint=adjoint)).double()
    z1, _ = cnf(z0, reverse=reverse)
    return z1.detach(), z0 @ torch.linalg.matrix_exp(-A if reverse else A).T, cnf


@pytest.mark.parametrize("backend", ["torchdiffeq", "torchdyn"])
@pytest.mark.parametrize("adjoint", [True, False])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rk4_returns_the_state_at_the_final_time(backend, adjoint, reverse):
    z1, exact, cnf = _solve("rk4", backend, 0.05, adjoint, reverse)
    assert (z1 - exact).abs().max().item() < 1e-6
    assert cnf.nfe_forward == cnf.vector_field.calls == 4 * 20  # 20 steps: it went all the way to t = 1


@pytest.mark.parametrize("backend", ["torchdiffeq", "torchdyn"])
def test_euler_returns_the_state_at_the_final_time(backend):
    A, z0 = _linear_problem()
    errors = []
    for steps in (20, 40):
        z1, exact, cnf = _solve("euler", backend, 1.0 / steps)
        assert cnf.nfe_forward == steps
        # Euler on a linear field is exactly (I + hA)^N z0: N steps of h, ending at t = N h = 1
        euler_map = torch.linalg.matrix_power(torch.eye(3, dtype=A.dtype) + A / steps, steps)
        assert torch.allclose(z1, z0 @ euler_map.T, atol=1e-10)
        errors.append((z1 - exact).abs().max().item())
    assert 1e-4 < errors[0] < 1.0 / 20  # an O(h) error against e^A z0 ...
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.15)  # ... that halves with h


@pytest.mark.parametrize("backend", ["torchdiffeq", "torchdyn"])
@pytest.mark.parametrize("seminorm", [True, False])
def test_fixed_step_adjoint_takes_the_forward_steps_backwards(seminorm, backend):
    """The backward solve of a fixed-step adjoint uses the step size too (under the default
    seminorm it once took a single rk4 step over [0, 1]: 4 evaluations, a gradient 3.2e-3 off),
    and nothing else: torchdyn's own adjoint added two evaluations for the time span's gradient."""
    A, z0 = _linear_problem()
    grads = {}
    for adjoint in (True, False):
        cnf = CNF(linear_field(A), divergence="none",
                  solver=SolverSpec(backend=backend, method="rk4", step_size=0.05, adjoint=adjoint,
                                    seminorm=seminorm)).double()
        z1, _ = cnf(z0)
        z1.pow(2).sum().backward()
        grads[adjoint] = cnf.vector_field.A.grad.clone()
        if adjoint:
            assert cnf.nfe_backward == 4 * 20
    # the same steps both ways: the two discrete gradients differ at O(h^4) (1.3e-8 relative)
    assert ((grads[True] - grads[False]).norm() / grads[False].norm()).item() < 1e-6


class TimeRecordingField(torch.nn.Module):
    """``f(t, z) = A z``, recording every time it is evaluated at."""

    def __init__(self, A):
        super().__init__()
        self.A = torch.nn.Parameter(A.clone())
        self.times = []

    def forward(self, t, z):
        self.times.append(float(t))
        return z @ self.A.T


@pytest.mark.parametrize("backend", ["native", "torchdiffeq", "torchdyn"])
@pytest.mark.parametrize("reverse", [False, True])
def test_adaptive_solves_land_on_the_end_time_and_the_adjoint_on_the_start(backend, reverse):
    """dopri5 steps exactly onto the end of the interval, forward and in the adjoint's backward
    solve, never evaluating the field outside [0, T]; torchdiffeq's default steps past the end
    and reads its 4th-order dense output there, which cost accuracy at the same NFE (on the
    MINIBOONE net at atol = rtol = 1e-5: z(T) 6.7e-5 from the exact solution instead of 1.6e-9)."""
    A, z0 = _linear_problem()
    field = TimeRecordingField(A)
    cnf = CNF(field, divergence="none", end_time=1.5, train_end_time=False,
              solver=SolverSpec(backend=backend, method="dopri5", atol=1e-5, rtol=1e-5, adjoint=True)).double()
    z1, _ = cnf(z0, reverse=reverse)
    forward_times = list(field.times)
    exact = z0 @ torch.linalg.matrix_exp((-1.5 if reverse else 1.5) * A).T
    assert ((z1 - exact).norm() / exact.norm()).item() < 1e-5
    end = cnf.odefunc.end_time.item()  # 1.5 to float32 rounding
    assert min(forward_times) == pytest.approx(0.0, abs=1e-12)  # both ends reached, nothing beyond them
    assert max(forward_times) == pytest.approx(end, rel=1e-12)
    field.times.clear()
    z1.pow(2).sum().backward()
    assert min(field.times) == pytest.approx(0.0, abs=1e-12)  # the backward solve's too
    assert max(field.times) == pytest.approx(end, rel=1e-12)
