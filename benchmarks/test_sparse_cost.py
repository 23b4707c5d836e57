"""Sparse kernels pay for WT: the paper's MINIBOONE flow WT-pruned, CSR kernels on and off.

``sparse: paper net`` times one forward + backward pass (NLL of a batch of 1,000 and its
gradient, the network's default solver, adjoint) of ``ffjord_l2_hm20_f1_softplus`` (43 -> 860 ->
860 -> 43 concatsquash layers), dense, then WT-pruned to keep 0.2, 0.1 and 0.04 with the sparse
kernels of :mod:`torchprune_flows.cnf.affine_hutchinson` off and on, in this order in one
session. WT's global magnitude threshold leaves the 860x860 layer at density 0.16 / 0.06 / 0.003
(the narrow layers stay at 0.7-0.8), so only keep 0.1 and 0.04 take the CSR kernels (density
<= ``SPARSE_MAX_DENSITY``). The "on" cases store ``speedup_vs_off`` (the same net, kernels off:
the same NFE), ``speedup_vs_dense`` and ``speedup_per_eval_vs_dense`` (the pruned net's NFE
differs) in ``extra_info`` (from the fastest of 3 rounds: the machine is shared), and
``sparse_layers`` (how many layers ran on CSR). The issue's
target: 1.5x at keep 0.04. Timings are never asserted.
"""
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.cnf import affine_hutchinson, cnf_blocks

from conftest import prepared, run_case

NETWORK = "ffjord_l2_hm20_f1_softplus"
CASES = [(None, 1.0, False)] + [("WT", keep, sparse) for keep in (0.2, 0.1, 0.04) for sparse in (False, True)]
_MEASURED = {}  # (method, keep, sparse) -> (seconds, NFE-F + NFE-B)


def _id(case):
    method, keep, sparse = case
    return "dense" if method is None else f"{method}-{keep}-sparse-{'on' if sparse else 'off'}"


def _sparse_layers(net, x):
    field = cnf_blocks(net)[0].odefunc.vector_field
    stack = field.as_affine_stack(0.0, x)
    return sum(affine_hutchinson.pattern_of(layer) is not None for layer in stack[0]) if stack else 0


@pytest.mark.parametrize("method,keep,sparse", CASES, ids=[_id(c) for c in CASES])
def test_wt_sparse_kernels_miniboone_forward_backward(benchmark, miniboone_batch, monkeypatch, method, keep, sparse):
    benchmark.group = "sparse: paper net"
    monkeypatch.setattr(affine_hutchinson, "SPARSE_KERNELS", sparse)
    torch.manual_seed(0)
    net, reached = prepared(tf.build_network(NETWORK, num_classes=43), method, keep)
    run_case(benchmark, net, miniboone_batch, rounds=3, family="tabular", network=NETWORK,
             method=method or "dense", keep_target=keep, keep_ratio=reached, sparse_kernels=sparse,
             sparse_layers=_sparse_layers(net, miniboone_batch))
    info = benchmark.extra_info
    seconds, evals = benchmark.stats.stats.min, info["nfe_forward"] + info["nfe_backward"]
    _MEASURED[(method, keep, sparse)] = (seconds, evals)
    if not sparse:
        return
    off = _MEASURED.get((method, keep, False))
    if off:
        info["speedup_vs_off"] = off[0] / seconds
    dense = _MEASURED.get((None, 1.0, False))
    if dense:
        info["speedup_vs_dense"] = dense[0] / seconds
        info["speedup_per_eval_vs_dense"] = (dense[0] / dense[1]) / (seconds / evals)
