"""Losses and metrics under torchprune's names.

They read every flow output of the protocol stated in :class:`~torchprune_flows.cnf.FlowNetwork`:
this package's flows and torchprune's own (toy ``{"out", "prior"}`` with the trace term in column
0 of ``out``; tabular/image ``{"out", "delta_logp"[, "nelement", "reg_loss"]}``), with
``log p(x) = log p(z) - delta_logp``. Losses are called ``loss(outputs, targets)``; metrics
``metric(outputs, targets) -> float`` with higher better, so NLL metrics return -NLL.
"""
import math
from collections import namedtuple

import torch
from torch import nn

from .cnf.flow import standard_normal_logprob
from .registry import register_loss, register_metric

#: ``log_pz`` and ``delta_logp`` per sample (N,), the data dimensions per sample, and any
#: regulariser the net added (0.0 when none).
FlowTerms = namedtuple("FlowTerms", "log_pz delta_logp dims reg_loss")


def flow_terms(outputs):
    """Read a flow output dict of any supported layout into :class:`FlowTerms`."""
    if not isinstance(outputs, dict):
        raise TypeError(f"a flow loss needs the flow's output dict, got {type(outputs).__name__}; "
                        "a classifier's logits go with CrossEntropyLoss")
    if "z" in outputs:  # this package's flows
        z, delta_logp = outputs["z"], outputs["delta_logp"]
        log_pz = standard_normal_logprob(z)
    elif "prior" in outputs:  # torchprune's toy flows: out = [trace term, z]
        out = outputs["out"]
        z, delta_logp = out[:, 1:], out[:, 0]
        log_pz = outputs["prior"].log_prob(z).to(out)
    elif "out" in outputs and "delta_logp" in outputs:  # torchprune's tabular and image flows
        z, delta_logp = outputs["out"], outputs["delta_logp"]
        log_pz = standard_normal_logprob(z)
    else:
        raise KeyError(f"not a flow output: keys {sorted(outputs)}; expected 'z' and 'delta_logp' "
                       "(torchprune_flows) or 'out' with 'prior' or 'delta_logp' (torchprune)")
    num = log_pz.shape[0]
    dims = outputs["nelement"] / num if "nelement" in outputs else z[0].numel()
    return FlowTerms(log_pz, delta_logp.reshape(num), dims, outputs.get("reg_loss", 0.0))


def flow_log_likelihood(outputs):
    """log p(x) per sample from a flow's output dict."""
    terms = flow_terms(outputs)
    return terms.log_pz - terms.delta_logp


def nll_nats(outputs):
    return nll_nats_per_sample(outputs).mean()


def nll_nats_per_sample(outputs):
    return -flow_log_likelihood(outputs)


def bits_per_dim(outputs):
    """-(log p(x) / dims - ln 256) / ln 2, averaged over the batch, for data scaled to [0, 1].

    ``log p`` is the density of the [0, 1]-scaled, dequantised data (including any logit
    transform's log-determinant); the ``ln 256`` turns it into the density of 8-bit values.
    """
    return bits_per_dim_per_sample(outputs).mean()


def bits_per_dim_per_sample(outputs):
    terms = flow_terms(outputs)
    log_p = terms.log_pz - terms.delta_logp
    return -(log_p / terms.dims - math.log(256.0)) / math.log(2.0)


class _FlowLoss(nn.Module):
    objective = staticmethod(nll_nats)
    objective_per_sample = staticmethod(nll_nats_per_sample)

    def __init__(self, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f"{type(self).__name__} takes no lossKwargs, got {sorted(kwargs)}")

    def forward(self, outputs, targets=None):
        """The objective, plus the regulariser a net adds under ``"reg_loss"`` (as torchprune)."""
        return self.objective(outputs) + flow_terms(outputs).reg_loss

    def per_sample(self, outputs):
        """The loss of each sample, shape (N,), without any regulariser (for standard errors)."""
        return self.objective_per_sample(outputs)


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
    objective_per_sample = staticmethod(bits_per_dim_per_sample)


register_loss("CrossEntropyLoss")(nn.CrossEntropyLoss)


def classifier_logits(outputs):
    """Logits from a classifier's output: a tensor, or torchprune's ``{"out"}`` / ``{"logits"}``."""
    if isinstance(outputs, dict):
        for key in ("out", "logits"):
            if key in outputs:
                return outputs[key]
        raise KeyError(f"no logits in the output dict (keys {sorted(outputs)}); expected 'out' or 'logits'")
    return outputs


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
        outputs = classifier_logits(outputs)
        top = outputs.topk(self.topk, dim=1).indices
        return (top == targets.view(-1, 1)).any(dim=1).float().mean()


@register_metric("MCorr")
class MCorr(_Metric):
    """Matthews correlation coefficient of the arg-max prediction (multi-class form)."""

    short_name = "Matthews corr."

    def value(self, outputs, targets):
        outputs = classifier_logits(outputs)
        num_classes = outputs.shape[1]
        pred = outputs.argmax(dim=1)
        conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        conf.index_put_((targets.long().cpu(), pred.cpu()), torch.ones(len(pred), dtype=torch.float64), accumulate=True)
        t_k, p_k, c, s = conf.sum(1), conf.sum(0), conf.trace(), conf.sum()
        denom = torch.sqrt((s * s - (p_k * p_k).sum()) * (s * s - (t_k * t_k).sum()))
        return 0.0 if denom == 0 else (c * s - (t_k * p_k).sum()) / denom
