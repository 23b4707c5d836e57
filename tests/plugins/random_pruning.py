"""A pruning-method plugin, as a user would write one: random unstructured pruning, the usual
baseline for magnitude pruning (WT).

Loaded by the tests as ``--plugin tests/plugins/random_pruning.py``; nothing in the package
knows it. It removes uniformly drawn weights among those still there, never the weights that
read time (so no vector field loses its time dependence), until the keep ratio is reached; the
draw is seeded by the number of weights left, so the same net and ratio give the same masks.
"""
import torch

from torchprune_flows import register_method
from torchprune_flows.pruning import count_nonzero, prunable_layers, set_mask, structured_chains


@register_method("RandomNet", alias="RP")
def prune_randomly(net, keep_ratio, params_original, over="all_parameters"):
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep ratio {keep_ratio} is outside (0, 1]")
    layers = prunable_layers(net)
    offsets = {id(layer): offset for chain in structured_chains(net) for layer, offset in chain}
    with torch.no_grad():
        alive = [layer.weight != 0 for layer in layers]
        candidates = []  # (layer index, flat index) of the weights that may go
        for i, (layer, mask) in enumerate(zip(layers, alive)):
            free = mask.clone()
            free[:, :offsets.get(id(layer), 0)] = False  # weights reading time stay
            candidates += [(i, j) for j in torch.nonzero(free.flatten()).flatten().tolist()]
        weights = sum(layer.weight.numel() for layer in layers)
        if over == "prunable_weights":
            excess = int(sum(int(m.sum()) for m in alive) - round(keep_ratio * weights))
        else:
            excess = int(count_nonzero(net) - round(keep_ratio * params_original))
        excess = max(0, min(excess, len(candidates)))
        generator = torch.Generator().manual_seed(count_nonzero(net))
        for k in torch.randperm(len(candidates), generator=generator)[:excess].tolist():
            i, j = candidates[k]
            alive[i].view(-1)[j] = False
        for layer, mask in zip(layers, alive):
            set_mask(layer, "weight", mask)
    if over == "prunable_weights":
        return sum(int((layer.weight != 0).sum()) for layer in layers) / weights
    return count_nonzero(net) / params_original
