"""Losses and metrics under torchprune's names.

Flow outputs are dicts ``{"z", "delta_logp"}`` (see :class:`~torchprune_flows.cnf.FlowNetwork`),
with ``log p(x) = log N(z; 0, I) - delta_logp``. Losses are called ``loss(outputs, targets)``;
metrics ``metric(outputs, targets) -> float`` with higher better, so NLL metrics return -NLL.
"""
import math

import torch
from torch import nn

from .cnf.flow import standard_normal_logprob
from .registry import register_loss, register_metric


def flow_log_likelihood(outputs):
    """log p(x) per sample from a flow's output dict."""
    return standard_normal_logprob(outputs["z"]) - outputs["delta_logp"]


def nll_nats(outputs):
    return -flow_log_likelihood(outputs).mean()


def bits_per_dim(outputs):
    """-(log p(x) / dims - ln 256) / ln 2, averaged over the batch, for data scaled to [0, 1].

    ``log p`` is the density of the [0, 1]-scaled, dequantised data (including any logit
    transform's log-determinant); the ``ln 256`` turns it into the density of 8-bit values.
    """
    log_p = flow_log_likelihood(outputs)
    dims = outputs["z"][0].numel()
    return (-(log_p / dims - math.log(256.0)) / math.log(2.0)).mean()


class _FlowLoss(nn.Module):
    objective = staticmethod(nll_nats)

    def __init__(self, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f"{type(self).__name__} takes no lossKwargs, got {sorted(kwargs)}")

    def forward(self, outputs, targets=None):
        return self.objective(outputs)


@register_loss("NLLPriorLoss")
class NLLPriorLoss(_FlowLoss):
    """Negative log-likelihood in nats under a standard normal prior (toy flows)."""


@register_loss("NLLNatsLoss")
class NLLNatsLoss(_FlowLoss):
    """Negative log-likelihood in nats (tabular flows)."""


@register_loss("NLLBitsLoss")
class NLLBitsLoss(_FlowLoss):
    """Negative log-likelihood in bits per dimension (image flows)."""

    objective = staticmethod(bits_per_dim)


register_loss("CrossEntropyLoss")(nn.CrossEntropyLoss)


class _Metric:
    """torchprune metric protocol: ``cls(output_size, **kwargs)``, ``metric(outputs, targets)``."""

    short_name = ""

    def __init__(self, output_size=None, **kwargs):
        self.output_size = output_size

    def __call__(self, outputs, targets):
        with torch.no_grad():
            return float(self.value(outputs, targets))


@register_metric("NLLPrior")
class NLLPrior(_Metric):
    short_name = "Negative NLL"

    def value(self, outputs, targets):
        return -nll_nats(outputs)


@register_metric("NLLNats")
class NLLNats(NLLPrior):
    short_name = "Negative NLL (nats)"


@register_metric("NLLBits")
class NLLBits(_Metric):
    short_name = "Negative bits/dim"

    def value(self, outputs, targets):
        return -bits_per_dim(outputs)


@register_metric("Dummy")
class Dummy(_Metric):
    short_name = "Dummy"

    def value(self, outputs, targets):
        return 0.0


@register_metric("TopK")
class TopK(_Metric):
    """Share of samples whose target is among the ``topk`` largest logits."""

    def __init__(self, output_size=None, topk=1):
        super().__init__(output_size)
        self.topk = topk
        self.short_name = f"Top-{topk} accuracy"

    def value(self, outputs, targets):
        top = outputs.topk(self.topk, dim=1).indices
        return (top == targets.view(-1, 1)).any(dim=1).float().mean()


@register_metric("MCorr")
class MCorr(_Metric):
    """Matthews correlation coefficient of the arg-max prediction (multi-class form)."""

    short_name = "Matthews corr."

    def value(self, outputs, targets):
        num_classes = outputs.shape[1]
        pred = outputs.argmax(dim=1)
        conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        conf.index_put_((targets.long().cpu(), pred.cpu()), torch.ones(len(pred), dtype=torch.float64), accumulate=True)
        t_k, p_k, c, s = conf.sum(1), conf.sum(0), conf.trace(), conf.sum()
        denom = torch.sqrt((s * s - (p_k * p_k).sum()) * (s * s - (t_k * t_k).sum()))
        return 0.0 if denom == 0 else (c * s - (t_k * p_k).sum()) / denom
