"""Test numbers that can carry the paper's comparisons (issue 12): small flows are evaluated with
the exact divergence (no probe noise), and every number comes with its standard error."""
import math

import torch

import torchprune_flows as tf
from torchprune_flows.cnf import with_divergence
from torchprune_flows.objectives import NLLNatsLoss, NLLPriorLoss, NLLPrior, Dummy
from torchprune_flows.runner.training import evaluate


def _loader(x, batch=64):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(len(x))), batch_size=batch)


def test_toy_flows_are_evaluated_with_the_exact_divergence():
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l2_h16_tanh_high_tol", num_classes=2)  # trained with Hutchinson
    x = torch.randn(200, 2)
    metrics = [NLLPrior(2), Dummy(2)]
    first = evaluate(net, _loader(x), NLLPriorLoss(), metrics, "cpu", seed=0)
    second = evaluate(net, _loader(x), NLLPriorLoss(), metrics, "cpu", seed=1)
    assert first["loss"] == second["loss"]  # no probe: the seed does not matter
    assert first["estimator"] == "exact divergence"
    with torch.no_grad(), with_divergence(net, "exact"):
        nll = -net.log_prob(x).double()
    assert math.isclose(first["loss"], float(nll.mean()), rel_tol=1e-5)
    assert math.isclose(first["loss_se"], float(nll.std() / math.sqrt(len(nll))), rel_tol=1e-4)
    assert net.chain[0].odefunc.divergence == "hutchinson"  # training keeps its estimator


def test_wide_flows_keep_one_probe_and_say_so():
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l1_hm1_f1_tanh_high_tol", num_classes=12)
    x = torch.randn(100, 12)
    result = evaluate(net, _loader(x), NLLNatsLoss(), [NLLPrior(12), Dummy(12)], "cpu", seed=0)
    assert result["estimator"] == "Hutchinson, one Gaussian probe per batch"
    other = evaluate(net, _loader(x), NLLNatsLoss(), [NLLPrior(12), Dummy(12)], "cpu", seed=1)
    assert result["loss"] != other["loss"]  # probe noise, which the standard error includes
    assert result["loss_se"] > 0
