"""Toy flow (ffjord_l2_h128_sigmoid, as in the ToyGaussians config): cost of a training batch.

A session fixture trains the flow briefly on ToyGaussians (400 seeded Adam steps of batch 256
with rk4 at step 0.25 and backprop, about 10-20 s), so the NFE reflects a learned, non-trivial
vector field rather than a freshly initialised one. Every case loads these weights into a net
with its solver configuration, prunes it (dense, WT and FT at keep 0.5 and 0.2) and times the
forward + backward pass of 1,024 ToyGaussians test points. Tolerances are the toy default
(atol = rtol = 1e-5); fixed-step solvers use step 0.05 (20 steps) as the ``_rk4_*`` /
``_euler_*`` networks do. Groups ``toy: solver|gradient|backend`` put the solver
configurations side by side (see ``conftest.py``); ``toy: seminorm gradients`` measures how far
the seminorm adjoint's gradients are from the plain adjoint's and from backprop.
"""
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.data.toy import ToyGaussians
from torchprune_flows.cnf import set_solver
from torchprune_flows.pruning import export_state, import_state

from conftest import PRUNE_CASES, SOLVER_CONFIGS, comparison_params, prepared, run_case, warm_up

NETWORK = "ffjord_l2_h128_sigmoid"
BATCH = 1024
TRAIN_STEPS, TRAIN_BATCH, TRAIN_LR = 400, 256, 1e-2


def build(**solver):
    return tf.build_network(NETWORK, num_classes=2, **solver)


@pytest.fixture(scope="module")
def toy_points():
    """(train points, the timed batch of BATCH test points), normalised as the experiments do."""
    train = ToyGaussians(split="train", seed=0).data
    test = ToyGaussians(split="test", seed=0).data[:BATCH]
    return train, test


@pytest.fixture(scope="module")
def trained_toy(toy_points):
    """Exported state of the briefly trained toy flow (seeded; fixed-step training for speed)."""
    train, test = toy_points
    torch.manual_seed(0)
    net = build(method="rk4", step_size=0.25, adjoint=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=TRAIN_LR)
    generator = torch.Generator().manual_seed(0)
    for _ in range(TRAIN_STEPS):
        batch = train[torch.randint(0, len(train), (TRAIN_BATCH,), generator=generator)]
        optimizer.zero_grad(set_to_none=True)
        loss = -net.log_prob(batch).mean()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    warm_up(build, test[:64])
    return export_state(net)


@pytest.mark.parametrize("axis,label,method,keep", comparison_params())
def test_toy_forward_backward(benchmark, toy_points, trained_toy, axis, label, method, keep):
    benchmark.group = f"toy: {axis}"
    net = import_state(build(**SOLVER_CONFIGS[label]), trained_toy)
    net, reached = prepared(net, method, keep)
    run_case(benchmark, net, toy_points[1], rounds=3, family="toy", network=NETWORK, solver=label,
             method=method or "dense", keep_target=keep, keep_ratio=reached)


def _gradient(net, x, **solver):
    set_solver(net, **solver)
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same Hutchinson probe in every mode
    (-net.log_prob(x).mean()).backward()
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("method,keep", PRUNE_CASES, ids=[f"{m or 'dense'}-{k}" for m, k in PRUNE_CASES])
def test_toy_seminorm_gradients(benchmark, toy_points, trained_toy, method, keep):
    """How far the seminorm adjoint's gradient is from the plain adjoint's and from backprop.

    Times the seminorm pass of the trained (and pruned, not retrained) toy flow at the default
    tolerance (atol = rtol = 1e-5) and stores ``seminorm_vs_adjoint``: ||g_seminorm - g_adjoint||
    / ||g_adjoint|| in float32 as trained, and, in float64 (the same weights; probes are drawn in
    float64 there), each adjoint's relative distance to backprop through dopri5 at 1e-10:
    ``grad_err_seminorm``, ``grad_err_adjoint``, ``grad_err_backprop`` (backprop at 1e-5)."""
    benchmark.group = "toy: seminorm gradients"
    net = import_state(build(**SOLVER_CONFIGS["dopri5-seminorm"]), trained_toy)
    net, reached = prepared(net, method, keep)
    x = toy_points[1]
    run_case(benchmark, net, x, rounds=1, family="toy", network=NETWORK, solver="dopri5-seminorm",
             method=method or "dense", keep_target=keep, keep_ratio=reached)
    seminorm = _gradient(net, x, adjoint=True, seminorm=True)
    plain = _gradient(net, x, adjoint=True, seminorm=False)
    net64, x64 = net.double(), x.double()
    reference = _gradient(net64, x64, adjoint=False, atol=1e-10, rtol=1e-10)
    errors = {name: _relative(_gradient(net64, x64, atol=1e-5, rtol=1e-5, **options), reference)
              for name, options in [("seminorm", dict(adjoint=True, seminorm=True)),
                                    ("adjoint", dict(adjoint=True, seminorm=False)),
                                    ("backprop", dict(adjoint=False))]}
    benchmark.extra_info.update(seminorm_vs_adjoint=_relative(seminorm, plain),
                                **{f"grad_err_{name}": err for name, err in errors.items()})
