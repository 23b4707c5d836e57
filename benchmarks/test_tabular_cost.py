"""MINIBOONE-shaped flows (43 dimensions, batch 1,000 as in the paper's config): cost of a batch.

* ``tabular: paper net`` -- the paper's MINIBOONE flow ``ffjord_l2_hm20_f1_softplus`` (820,613
  parameters) with the network's default solver (dopri5, atol 1e-8, rtol 1e-6, adjoint, and the
  package's default for the seminorm; ``extra_info["gradient"]`` says which), dense and
  WT/FT-pruned to keep 0.2; one round each, since a pass takes 7-15 s on one core.
* ``tabular: solver|gradient|backend`` -- the same architecture 10x narrower
  (``ffjord_l2_hm2_f1_softplus``, hidden width 86, 15,653 parameters) and the same tolerances,
  dense and WT/FT at keep 0.5 and 0.2, under every solver configuration of ``conftest.py``
  (fixed-step solvers at step 0.05).

The nets are freshly initialised (seed 0), so the numbers measure the cost of the architecture,
solver and sparsity pattern, not of a trained field. The batch is the first 1,000 MINIBOONE rows
(z-scored) when ``../shared/data/miniboone/first_rows.npy`` exists, else Gaussian rows.
"""
import pytest
import torch

import torchprune_flows as tf

from conftest import SOLVER_CONFIGS, comparison_params, prepared, run_case, solver_info, warm_up

PAPER_NETWORK = "ffjord_l2_hm20_f1_softplus"
NARROW_NETWORK = "ffjord_l2_hm2_f1_softplus"
PAPER_CASES = [(None, 1.0), ("WT", 0.2), ("FT", 0.2)]


def build(name, **solver):
    torch.manual_seed(0)
    return tf.build_network(name, num_classes=43, **solver)


@pytest.fixture(scope="module")
def tabular_warm(miniboone_batch):
    warm_up(lambda **solver: build(NARROW_NETWORK, **solver), miniboone_batch[:64])


@pytest.mark.parametrize("method,keep", PAPER_CASES, ids=[f"{m or 'dense'}-{k}" for m, k in PAPER_CASES])
def test_miniboone_forward_backward(benchmark, miniboone_batch, tabular_warm, method, keep):
    benchmark.group = "tabular: paper net"
    net, reached = prepared(build(PAPER_NETWORK), method, keep)
    solver = solver_info(net)
    run_case(benchmark, net, miniboone_batch, rounds=1, family="tabular", network=PAPER_NETWORK,
             solver=f"{solver['solver_method']}-{solver['gradient']} (default)", method=method or "dense",
             keep_target=keep, keep_ratio=reached)


@pytest.mark.parametrize("axis,label,method,keep", comparison_params())
def test_narrow_miniboone_forward_backward(benchmark, miniboone_batch, tabular_warm, axis, label, method, keep):
    benchmark.group = f"tabular: {axis}"
    net, reached = prepared(build(NARROW_NETWORK, **SOLVER_CONFIGS[label]), method, keep)
    run_case(benchmark, net, miniboone_batch, rounds=2, family="tabular", network=NARROW_NETWORK,
             solver=label, method=method or "dense", keep_target=keep, keep_ratio=reached)
