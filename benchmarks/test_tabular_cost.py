"""MINIBOONE flow (ffjord_l2_hm20_f1_softplus, 820,613 parameters): cost of a training batch.

Dense and WT/FT-pruned at two keep ratios, batch 1,000 as in the paper's config, the paper's
solver (dopri5, atol 1e-8, rtol 1e-6, adjoint). The nets are freshly initialised (seed 0), so the
numbers measure the cost of the architecture and sparsity pattern, not of a trained field.
"""
import pytest

import torchprune_flows as tf

from conftest import prepared, run_case

CASES = [(None, 1.0), ("WT", 0.3), ("FT", 0.3), ("WT", 0.1), ("FT", 0.1)]


@pytest.mark.parametrize("method,keep", CASES, ids=[f"{m or 'dense'}-{k}" for m, k in CASES])
def test_miniboone_forward_backward(benchmark, miniboone_batch, method, keep):
    benchmark.group = "miniboone fwd+bwd (batch 1000)"
    net, reached = prepared(tf.build_network("ffjord_l2_hm20_f1_softplus", num_classes=43), method, keep)
    run_case(benchmark, net, miniboone_batch, rounds=2, method=method or "dense", keep_ratio=reached)
