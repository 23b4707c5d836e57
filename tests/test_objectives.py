"""Losses and metrics against independent computations."""
import math

import pytest
import torch

from torchprune_flows.objectives import (MCorr, NLLBits, NLLBitsLoss, NLLNatsLoss, NLLPrior, NLLPriorLoss, TopK,
                                         bits_per_dim)


def _outputs(batch=5, shape=(3,), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"z": torch.randn(batch, *shape, generator=g), "delta_logp": torch.randn(batch, generator=g)}


def test_nll_in_nats_is_minus_mean_log_likelihood():
    out = _outputs()
    z, d = out["z"].double(), out["delta_logp"].double()
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1) - d
    for loss in (NLLPriorLoss(), NLLNatsLoss()):
        assert loss(out, None).item() == pytest.approx(-log_p.mean().item(), rel=1e-5)
    assert NLLPrior(2)(out, None) == pytest.approx(log_p.mean().item(), rel=1e-5)


def test_bits_per_dim_from_log_likelihoods():
    out = _outputs(batch=4, shape=(1, 4, 4))
    z, d = out["z"].double(), out["delta_logp"].double()
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1) - d
    dims = 16
    # log-likelihood of 8-bit data: the density of x/256 plus dims * log(1/256) per sample
    expected = (-(log_p - dims * math.log(256)) / (dims * math.log(2))).mean()
    assert NLLBitsLoss()(out, None).item() == pytest.approx(expected.item(), rel=1e-5)
    assert bits_per_dim(out).item() == pytest.approx(expected.item(), rel=1e-5)
    assert NLLBits(10)(out, None) == pytest.approx(-expected.item(), rel=1e-5)


def test_losses_reject_unknown_kwargs():
    with pytest.raises(TypeError, match="takes no lossKwargs"):
        NLLPriorLoss(reduction="sum")


def test_topk_and_matthews_correlation():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.2, 0.1], [0.0, 1.0]])
    targets = torch.tensor([0, 1, 1, 1, 0])
    assert TopK(2, topk=1)(logits, targets) == pytest.approx(2 / 5)
    assert TopK(2, topk=2)(logits, targets) == 1.0
    pred = logits.argmax(1)
    tp = ((pred == 1) & (targets == 1)).sum().item()
    tn = ((pred == 0) & (targets == 0)).sum().item()
    fp = ((pred == 1) & (targets == 0)).sum().item()
    fn = ((pred == 0) & (targets == 1)).sum().item()
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert MCorr(2)(logits, targets) == pytest.approx(mcc)
