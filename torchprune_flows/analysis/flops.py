"""Cost of one vector-field evaluation: multiply-adds of the nonzero weights, in FLOPs.

A solver step evaluates every CNF block's vector field; the cost of one such evaluation per
sample is the sum over the Linear / Conv2d layers inside the fields of 2 × (nonzero weights)
× (output positions: 1 for Linear, H_out × W_out for Conv2d). Pruned (masked) entries are zeros
and do not count: this is the cost a sparse or compacted implementation pays, not what a dense
kernel spends. Bias additions are left out (one per output, the same for every method).
"""
import torch
from torch import nn

from ..cnf import cnf_blocks


def _layer_flops(module, output):
    nonzero = int((module.weight != 0).sum())
    if isinstance(module, nn.Conv2d):
        return 2 * nonzero * int(output.shape[-1] * output.shape[-2])
    return 2 * nonzero


@torch.no_grad()
def vector_field_flops(net, x):
    """FLOPs of one evaluation of every CNF block's vector field for one sample like ``x[:1]``.

    Runs one forward pass of ``net`` on ``x[:1]`` with hooks on the fields' Linear and Conv2d
    layers, counting each layer's first call (every later call of the solve costs the same).
    """
    counted, handles = {}, []
    for block in cnf_blocks(net):
        for module in block.vector_field.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                def hook(mod, inputs, output):
                    if id(mod) not in counted:
                        counted[id(mod)] = _layer_flops(mod, output)
                handles.append(module.register_forward_hook(hook))
    was_training = net.training
    net.eval()
    try:
        net(x[:1])
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return sum(counted.values())
