"""Compaction pays: the paper's MINIBOONE flow FT-pruned and compacted against the dense one.

``compact: paper net`` times one forward + backward pass (NLL of a batch of 1,000 and its
gradient, the network's default solver) of ``ffjord_l2_hm20_f1_softplus`` (43 dimensions),
dense, then FT-pruned to keep 0.5 and 0.2 both as masked nets (the shapes of the dense one) and
compacted (:func:`torchprune_flows.compact`), in this order in one session. Each compacted case
stores in ``extra_info`` its speed-up over the dense net and over the masked net of the same
keep ratio measured in the same run (``speedup_vs_dense``, ``speedup_vs_masked``), and per
vector-field evaluation (``speedup_per_eval_vs_dense``: the pruned field's NFE differs from the
dense one's). The issue's targets: at least 1.6x at keep 0.5 and 3x at keep 0.2 over dense.
Timings are never asserted.
"""
import pytest
import torch

import torchprune_flows as tf

from conftest import prepared, run_case

NETWORK = "ffjord_l2_hm20_f1_softplus"
CASES = [(None, 1.0, False), ("FT", 0.5, False), ("FT", 0.5, True), ("FT", 0.2, False), ("FT", 0.2, True)]
_MEASURED = {}  # (method, keep, compacted) -> (seconds, NFE-F + NFE-B)


def _id(case):
    method, keep, compacted = case
    return "dense" if method is None else f"{method}-{keep}-{'compact' if compacted else 'masked'}"


@pytest.mark.parametrize("method,keep,compacted", CASES, ids=[_id(c) for c in CASES])
def test_compacted_miniboone_forward_backward(benchmark, miniboone_batch, method, keep, compacted):
    benchmark.group = "compact: paper net"
    torch.manual_seed(0)
    net, reached = prepared(tf.build_network(NETWORK, num_classes=43), method, keep)
    if compacted:
        net = tf.compact(net)
    run_case(benchmark, net, miniboone_batch, rounds=1, family="tabular", network=NETWORK,
             method=method or "dense", keep_target=keep, keep_ratio=reached, compacted=compacted,
             weights=sum(p.numel() for p in net.parameters()))
    info = benchmark.extra_info
    seconds, evals = benchmark.stats.stats.median, info["nfe_forward"] + info["nfe_backward"]
    _MEASURED[(method, keep, compacted)] = (seconds, evals)
    for key, (base_seconds, base_evals) in (("dense", _MEASURED.get((None, 1.0, False), (None, None))),
                                            ("masked", _MEASURED.get((method, keep, False), (None, None)))):
        if compacted and base_seconds:
            info[f"speedup_vs_{key}"] = base_seconds / seconds
            info[f"speedup_per_eval_vs_{key}"] = (base_seconds / base_evals) / (seconds / evals)
