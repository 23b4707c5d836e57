"""Child process (TORCHPRUNE_FLOWS_NO_BRIDGE=1, so torchprune keeps its own classes): our flows'
outputs through torchprune's losses and metrics, and torchprune's flows' outputs through ours.
Prints JSON pairs [value from one side, independent reference] to compare."""
import json
import math

import torch

import torchprune.util.metrics as tp_metrics
import torchprune.util.models as tp_models
import torchprune.util.nn_loss as tp_loss
import torchprune_flows as tf
from torchprune_flows import objectives as ours

torch.manual_seed(0)
normal = torch.distributions.Normal(0.0, 1.0)


def reference_nll(z, delta_logp):
    """-mean log p(x) from the latent and the log-det term, written out independently."""
    log_pz = normal.log_prob(z.double()).reshape(z.shape[0], -1).sum(1)
    return float(-(log_pz - delta_logp.double().reshape(-1)).mean())


def reference_bits(z, delta_logp):
    dims = z[0].numel()
    log_pz = normal.log_prob(z.double()).reshape(z.shape[0], -1).sum(1)
    log_p = log_pz - delta_logp.double().reshape(-1)
    return float((-(log_p / dims - math.log(256)) / math.log(2)).mean())


report = {}
with torch.no_grad():
    # our toy flow (exact trace) under torchprune's NLLPriorLoss / NLLPrior
    net = tf.build_network("cnf_l2_h16_tanh_high_tol", num_classes=2)
    out = net(torch.randn(64, 2))
    ref = reference_nll(out["z"], out["delta_logp"])
    report["our_toy/tp_NLLPriorLoss"] = [float(tp_loss.NLLPriorLoss()(out, None)), ref]
    report["our_toy/tp_NLLPrior"] = [tp_metrics.NLLPrior(2)(out, None), -ref]
    # our multi-block tabular flow under torchprune's NLLNatsLoss / NLLNats
    net = tf.build_network("ffjord_l1_hm2_f2_softplus_high_tol", num_classes=5)
    out = net(torch.randn(32, 5))
    ref = reference_nll(out["z"], out["delta_logp"])
    report["our_tabular/tp_NLLNatsLoss"] = [float(tp_loss.NLLNatsLoss()(out, None)), ref]
    report["our_tabular/tp_NLLNats"] = [tp_metrics.NLLNats(5)(out, None), -ref]
    # our image flow under torchprune's NLLBitsLoss / NLLBits
    net = tf.build_network("ffjord_multiscale_mnist", num_classes=10, num_in_channels=1, image_size=8,
                           hidden=(8,), blocks=1, atol=1e-3, rtol=1e-3)
    out = net(torch.rand(3, 1, 8, 8) * 0.9 + 0.05)
    ref = reference_bits(out["z"], out["delta_logp"])
    report["our_image/tp_NLLBitsLoss"] = [float(tp_loss.NLLBitsLoss()(out, None)), ref]
    report["our_image/tp_NLLBits"] = [tp_metrics.NLLBits(10)(out, None), -ref]

    # torchprune's own toy flow: {"out": [trace term, z], "prior"} through our loss and metric
    theirs = tp_models.ffjord_l2_h64_sigmoid_da(num_classes=2)
    out = theirs(torch.randn(64, 2))
    report["tp_toy/our_NLLPriorLoss"] = [float(ours.NLLPriorLoss()(out, None)),
                                         float(tp_loss.NLLPriorLoss()(out, None))]
    report["tp_toy/our_NLLPrior"] = [ours.NLLPrior(2)(out, None), tp_metrics.NLLPrior(2)(out, None)]
    # torchprune's tabular output layout {"out": z, "delta_logp": (N, 1)}, from its own flow
    theirs = tp_models.ffjord_l2_hm20_f1_softplus(num_classes=6)
    out = theirs(torch.randn(16, 6))
    report["tp_tabular/our_NLLNatsLoss"] = [float(ours.NLLNatsLoss()(out, None)),
                                            float(tp_loss.NLLNatsLoss()(out, None))]
    report["tp_tabular/our_NLLNats"] = [ours.NLLNats(6)(out, None), tp_metrics.NLLNats(6)(out, None)]
    # torchprune's image output layout {"out", "delta_logp", "nelement"}
    z, delta = torch.randn(4, 48), torch.randn(4, 1)
    out = {"out": z, "delta_logp": delta, "nelement": 4 * 48}
    report["tp_image/our_NLLBitsLoss"] = [float(ours.NLLBitsLoss()(out, None)),
                                          float(tp_loss.NLLBitsLoss()(out, None))]
    report["tp_image/our_NLLBits"] = [ours.NLLBits(10)(out, None), tp_metrics.NLLBits(10)(out, None)]
    # classifiers: logits or torchprune's {"out": logits}
    logits, targets = torch.randn(50, 3), torch.randint(0, 3, (50,))
    report["logits/our_TopK"] = [ours.TopK(3, topk=1)({"out": logits}, targets),
                                 tp_metrics.TopK(3, topk=1)(logits, targets)]
    report["logits/our_MCorr"] = [ours.MCorr(3)({"out": logits}, targets), tp_metrics.MCorr(3)(logits, targets)]
print(json.dumps(report))
