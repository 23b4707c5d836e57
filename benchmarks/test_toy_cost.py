"""Toy flow (ffjord_l2_h128_sigmoid, as in the ToyGaussians config): cost of a training batch.

A session fixture trains the flow briefly on ToyGaussians (400 seeded Adam steps of batch 256
with rk4 at step 0.25 and backprop, about 10-20 s), so the NFE reflects a learned, non-trivial
vector field rather than a freshly initialised one. Every case loads these weights into a net
with its solver configuration, prunes it (dense, WT and FT at keep 0.5 and 0.2) and times the
forward + backward pass of 1,024 ToyGaussians test points. Tolerances are the toy default
(atol = rtol = 1e-5); fixed-step solvers use step 0.05 (20 steps) as the ``_rk4_*`` /
``_euler_*`` networks do. Groups ``toy: solver|gradient|backend`` put the solver
configurations side by side (see ``conftest.py``).
"""
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.data.toy import ToyGaussians
from torchprune_flows.pruning import export_state, import_state

from conftest import SOLVER_CONFIGS, comparison_params, prepared, run_case, warm_up

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
