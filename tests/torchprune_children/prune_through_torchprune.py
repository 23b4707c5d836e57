"""Child process: torchprune's own FilterThresNet and ThresNet on our multi-block tabular flow
and our multiscale image flow; reports the invariants and the achieved keep ratios as JSON."""
import json

import torch

import torchprune as tp
import torchprune_flows as tf
from torchprune.util.net import NetHandle
from torchprune_flows.cnf import cnf_blocks
from torchprune_flows.objectives import NLLBitsLoss, NLLNatsLoss

torch.manual_seed(0)
torch.set_grad_enabled(False)  # as torchprune's Evaluator does before compressing


def time_tensors(net):
    """Every time-only tensor: concatsquash gates/shifts, time convs."""
    return {name: p.detach().clone() for name, p in net.named_parameters()
            if any(part in name for part in (".gate.", ".shift.", ".time."))}


def block_outputs(net):
    return [block.vector_field.layers[-1].prunable for block in cnf_blocks(net)]


def check(name, net, data, loss, keep):
    handle = NetHandle(net, name)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, torch.zeros(len(data))),
                                         batch_size=len(data) // 2)
    with torch.no_grad():
        handle(data[:4])  # torchprune's runner evaluates a net once before pruning (caches its FLOPs)
    before = time_tensors(handle.torchnet)
    result = {"compressible": len(handle.compressible_layers)}
    for method in ("FilterThresNet", "ThresNet"):
        pruned = getattr(tp, method)(handle, loader, loss)
        pruned.compress(keep_ratio=keep)
        torchnet = pruned.compressed_net.torchnet
        after = time_tensors(torchnet)
        hidden = [layer.prunable for block in cnf_blocks(torchnet) for layer in block.vector_field.layers[:-1]]
        result[method] = {
            "keep": pruned.size() / handle.size(),
            "dead_block_outputs": sum(int((m.weight.reshape(m.weight.shape[0], -1) == 0).all(1).sum())
                                      for m in block_outputs(torchnet)),
            "time_tensors_changed": sorted(k for k in before if not torch.equal(before[k], after[k])),
            "dead_hidden_units": sum(int((m.weight.reshape(m.weight.shape[0], -1) == 0).all(1).sum())
                                     for m in hidden),
        }
    return result


report = {
    "tabular": check("ffjord_l1_hm4_f3_softplus_high_tol",
                     tf.build_network("ffjord_l1_hm4_f3_softplus_high_tol", num_classes=6),
                     torch.randn(64, 6), NLLNatsLoss(), 0.5),
    "image": check("ffjord_multiscale_mnist",
                   tf.build_network("ffjord_multiscale_mnist", num_classes=10, num_in_channels=1, image_size=8,
                                    hidden=(16, 16), blocks=1, atol=1e-3, rtol=1e-3),
                   torch.rand(8, 1, 8, 8) * 0.9 + 0.05, NLLBitsLoss(), 0.5),
}
print(json.dumps(report))
