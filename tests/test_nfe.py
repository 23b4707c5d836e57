"""NFE counters against independent counts of vector-field calls."""
import pytest
import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec, nfe_counts


class CountingField(nn.Module):
    """An MLP field that counts its own calls."""

    def __init__(self, dim=2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, dim))
        self.calls = 0

    def forward(self, t, z):
        self.calls += 1
        return self.net(z)


class BackwardCounter:
    """Counts the evaluations of ``module`` that a backward pass differentiates through: each
    output that requires grad gets a hook, which fires when the gradient reaches it."""

    def __init__(self, module):
        self.hits = 0
        module.register_forward_hook(self._on_forward)

    def _on_forward(self, module, inputs, output):
        if output.requires_grad:
            output.register_hook(self._on_gradient)

    def _on_gradient(self, grad):
        self.hits += 1


def _run(spec, divergence="hutchinson"):
    """``(flow, field calls in the forward solve, field calls in the backward pass, evaluations
    the backward pass differentiated through)``."""
    torch.manual_seed(0)
    field = CountingField()
    counter = BackwardCounter(field)
    flow = FlowNetwork([CNF(field, divergence=divergence, solver=spec)], (2,))
    x = torch.randn(64, 2)
    out = flow(x)
    calls_forward = field.calls
    loss = (0.5 * out["z"].pow(2).sum(1) + out["delta_logp"].reshape(-1)).mean()
    counter.hits = 0  # only what the backward pass reaches
    loss.backward()
    return flow, calls_forward, field.calls - calls_forward, counter.hits


@pytest.mark.parametrize("backend", ["torchdiffeq", "torchdyn"])
@pytest.mark.parametrize("method,stages", [("rk4", 4), ("euler", 1)])
@pytest.mark.parametrize("adjoint", [True, False])
def test_fixed_step_nfe_is_stages_times_steps(backend, method, stages, adjoint):
    steps = 5
    spec = SolverSpec(backend=backend, method=method, step_size=1.0 / steps, adjoint=adjoint)
    flow, calls_f, calls_b, differentiated = _run(spec)
    counts = nfe_counts(flow)
    assert counts["forward"] == stages * steps == calls_f
    if adjoint:  # the adjoint solve runs the same fixed-step method backwards
        assert counts["backward"] == calls_b > 0
    else:  # backprop through the solver: no new calls, the gradient reaches every evaluation
        assert calls_b == 0 and counts["backward"] == differentiated == stages * steps


@pytest.mark.parametrize("seminorm", [False, True])
def test_adaptive_nfe_matches_call_count(seminorm):
    spec = SolverSpec(method="dopri5", atol=1e-6, rtol=1e-6, adjoint=True, seminorm=seminorm)
    flow, calls_f, calls_b, _ = _run(spec)
    counts = nfe_counts(flow)
    assert counts["forward"] == calls_f >= 8  # dopri5: at least 6 stages + start-up
    assert counts["backward"] == calls_b > 0


def test_counters_reset_every_call_and_sum_over_blocks():
    blocks = [CNF(CountingField(), solver=SolverSpec(method="euler", step_size=0.25, adjoint=False)) for _ in range(3)]
    flow = FlowNetwork(blocks, (2,))
    with torch.no_grad():
        flow(torch.randn(4, 2))
        flow(torch.randn(4, 2))
    assert nfe_counts(flow) == {"forward": 3 * 4, "backward": 0}


def test_network_from_registry_reports_nfe():
    net = tf.build_network("ffjord_l2_h16_tanh_rk4_autograd", num_classes=2, step_size=0.5)
    counter = BackwardCounter(net.chain[0].odefunc)  # the field itself may be evaluated in one fused pass
    out = net(torch.randn(8, 2))
    counter.hits = 0
    (out["z"].sum() + out["delta_logp"].sum()).backward()
    # rk4 (4 stages) over 2 steps; backprop reaches each of those evaluations once
    assert nfe_counts(net) == {"forward": 8, "backward": counter.hits} and counter.hits == 8
