"""Shared pieces of the solver-cost benchmarks (``pytest benchmarks/ --benchmark-only``).

Every case times one forward + backward pass of a batch (the unit of training cost) and stores
the NFE of that pass (summed over CNF blocks) in ``extra_info`` next to the timings.
"""
import os

import numpy as np
import pytest
import torch

from torchprune_flows.cnf import nfe_counts
from torchprune_flows.pruning import count_nonzero, count_parameters, prune

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")


def forward_backward(net, x):
    """NLL of ``x`` and its gradient; returns the NFE of the pass."""
    net.zero_grad(set_to_none=True)
    loss = -net.log_prob(x).mean()
    loss.backward()
    if not torch.isfinite(loss):
        raise FloatingPointError("non-finite loss in a benchmark pass")
    return nfe_counts(net)


def prepared(net, method, keep, seed=0):
    """``net`` pruned with ``method`` to ``keep`` (dense for method None); returns (net, keep reached)."""
    torch.manual_seed(seed)
    original = count_parameters(net)
    if method is not None:
        prune(net, method, keep, original)
    return net, count_nonzero(net) / original


def run_case(benchmark, net, x, rounds, **info):
    """Benchmark a forward+backward pass of ``net`` on ``x``; NFE and ``info`` go to extra_info."""
    torch.manual_seed(0)
    nfe = benchmark.pedantic(forward_backward, args=(net, x), rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(info)
    benchmark.extra_info.update(nfe_forward=nfe["forward"], nfe_backward=nfe["backward"],
                                params=count_nonzero(net), batch=len(x))
    assert nfe["forward"] > 0 and nfe["backward"] > 0


@pytest.fixture(scope="session")
def miniboone_batch():
    """1,000 z-scored MINIBOONE rows (the real first rows if present, else a Gaussian batch)."""
    path = os.path.join(SHARED_DATA, "miniboone", "first_rows.npy")
    if os.path.exists(path):
        rows = np.load(path)[:1000]
        rows = (rows - rows.mean(0)) / rows.std(0)
    else:
        rows = np.random.default_rng(0).standard_normal((1000, 43))
    return torch.as_tensor(rows, dtype=torch.float32)
