"""WT (``ThresNet``, unstructured magnitude) and FT (``FilterThresNet``, structured L1) pruning.

Both reach a target *keep ratio*: nonzero entries over all parameters of the pruned network,
divided by the parameter count of the original network (biases and non-prunable layers count).
Cascaded calls only ever add to the existing masks.
"""
import difflib

import torch

from .masks import count_nonzero, current_mask, effective_tensors, refresh_pruned_tensors, set_mask
from .structure import prunable_layers, structured_chains


class PruningError(ValueError):
    pass


def _check_ratio(keep_ratio):
    if not 0 < keep_ratio <= 1:
        raise PruningError(f"keep ratio {keep_ratio} is outside (0, 1]; give the fraction of parameters to keep")


def _unit_view(tensor):
    """Weights grouped per output unit: (out, everything else)."""
    return tensor.reshape(tensor.shape[0], -1)


def _column_mask(consumer, offset, dead_units):
    """Mask of ``consumer.weight`` with the input columns of ``dead_units`` removed."""
    mask = torch.ones_like(consumer.weight, dtype=torch.bool)
    mask[:, offset + dead_units] = False
    return mask


def _row_masks(layer, dead_units):
    weight = torch.ones_like(layer.weight, dtype=torch.bool)
    weight[dead_units] = False
    bias = None
    if layer.bias is not None:
        bias = torch.ones_like(layer.bias, dtype=torch.bool)
        bias[dead_units] = False
    return weight, bias


class _MaskPlan:
    """Candidate masks for a network, evaluated without touching it until ``commit``."""

    def __init__(self, net):
        self.net = net
        self.masks = {}  # (module, tensor name) -> bool mask

    def restrict(self, module, name, mask):
        key = (module, name)
        base = self.masks.get(key, current_mask(module, name).bool())
        self.masks[key] = base & mask

    def mask_of(self, module, name):
        return self.masks.get((module, name), current_mask(module, name).bool())

    @torch.no_grad()
    def nonzero(self, fixed_nonzero, layers):
        total = fixed_nonzero
        for layer in layers:
            for name in ("weight", "bias"):
                tensor = getattr(layer, name)
                if tensor is not None:
                    total += int(((tensor != 0) & self.mask_of(layer, name)).sum())
        return total

    def commit(self):
        for (module, name), mask in self.masks.items():
            set_mask(module, name, mask)


def _fixed_nonzero(net, layers):
    """Nonzero entries of everything outside the prunable layers' weights and biases."""
    layer_ids = {id(m) for m in layers}
    touched = {f"{prefix}.{tensor}" if prefix else tensor
               for prefix, module in net.named_modules() if id(module) in layer_ids for tensor in ("weight", "bias")}
    return int(sum((t != 0).sum() for name, t in effective_tensors(net).items() if name not in touched))


def _remove_dead_units(plan, chains):
    """Drop the rows and biases of units whose every outgoing weight is pruned (no effect on output)."""
    for chain in chains:  # from the output backwards, so that removals propagate to earlier layers
        for (producer, _), (consumer, offset) in reversed(list(zip(chain[:-1], chain[1:]))):
            w = plan.mask_of(consumer, "weight") & (consumer.weight != 0)
            outgoing = w.transpose(0, 1).reshape(w.shape[1], -1)[offset:offset + producer.weight.shape[0]]
            dead = torch.nonzero(~outgoing.any(dim=1)).flatten()
            if len(dead):
                weight, bias = _row_masks(producer, dead)
                plan.restrict(producer, "weight", weight)
                if bias is not None:
                    plan.restrict(producer, "bias", bias)


def _closest(count_for, lo, hi, target):
    """Integer k in [lo, hi] whose non-decreasing ``count_for(k)`` is closest to ``target``."""
    a, b = lo, hi
    while a < b:
        mid = (a + b) // 2
        if count_for(mid)[0] >= target:
            b = mid
        else:
            a = mid + 1
    candidates = [count_for(k) for k in {max(lo, a - 1), a}]
    return min(candidates, key=lambda c: (abs(c[0] - target), -c[0]))


@torch.no_grad()
def prune_weights(net, keep_ratio, params_original):
    """WT: keep the largest-magnitude weights of all prunable layers under one global threshold.

    Biases are not scored; a unit whose outgoing weights are all pruned loses its row and bias
    too, since it no longer affects the output. Returns the achieved keep ratio.
    """
    _check_ratio(keep_ratio)
    refresh_pruned_tensors(net)
    layers = prunable_layers(net)
    chains = structured_chains(net)
    fixed = _fixed_nonzero(net, layers)
    target = keep_ratio * params_original
    magnitudes = torch.cat([(l.weight.abs() * current_mask(l, "weight")).flatten() for l in layers])
    order = torch.argsort(magnitudes, descending=True, stable=True)
    sizes = [l.weight.numel() for l in layers]

    def plan_for(k):
        keep = torch.zeros_like(magnitudes, dtype=torch.bool)
        keep[order[:k]] = True
        plan = _MaskPlan(net)
        for layer, mask in zip(layers, torch.split(keep, sizes)):
            plan.restrict(layer, "weight", mask.view_as(layer.weight))
        _remove_dead_units(plan, chains)
        return plan.nonzero(fixed, layers), plan

    num_alive = int((magnitudes != 0).sum())
    _, plan = _closest(plan_for, 0, num_alive, target)
    plan.commit()
    return count_nonzero(net) / params_original


@torch.no_grad()
def prune_filters(net, keep_ratio, params_original):
    """FT: in every prunable layer keep the same fraction of output units (Linear rows / Conv2d
    filters), chosen by the L1 norm of their weights; the last layer of each vector field keeps
    all its outputs, and weights reading time inputs are never touched. Removing a unit zeroes
    its row, its bias and the input columns that read it in the next layer. Returns the achieved
    keep ratio (the closest a uniform fraction can get).
    """
    _check_ratio(keep_ratio)
    refresh_pruned_tensors(net)
    layers = prunable_layers(net)
    chains = structured_chains(net)
    fixed = _fixed_nonzero(net, layers)
    target = keep_ratio * params_original
    scored = []  # (producer, consumer, offset, units ordered from weakest to strongest, alive)
    for chain in chains:
        for (producer, _), (consumer, offset) in zip(chain[:-1], chain[1:]):
            weight = producer.weight * current_mask(producer, "weight")
            alive = _unit_view(current_mask(producer, "weight")).any(dim=1)
            score = _unit_view(weight.abs()).sum(dim=1)
            score[~alive] = -1.0
            scored.append((producer, consumer, offset, torch.argsort(score, stable=True), int(alive.sum())))
    # Units are given back one at a time in order of the fraction they represent in their layer,
    # so after any number of steps every layer keeps the same fraction up to one unit.
    events = sorted((i / len(order), j) for j, (_, _, _, order, _) in enumerate(scored)
                    for i in range(1, len(order) + 1))

    def plan_for(step):
        kept = [0] * len(scored)
        for _, j in events[:step]:
            kept[j] += 1
        plan = _MaskPlan(net)
        for (producer, consumer, offset, order, alive), keep in zip(scored, kept):
            keep = min(alive, max(1, keep))  # every layer keeps at least one unit
            dead = order[: len(order) - keep]
            weight, bias = _row_masks(producer, dead)
            plan.restrict(producer, "weight", weight)
            if bias is not None:
                plan.restrict(producer, "bias", bias)
            plan.restrict(consumer, "weight", _column_mask(consumer, offset, dead))
        return plan.nonzero(fixed, layers), plan

    _, plan = _closest(plan_for, 0, len(events), target)
    plan.commit()
    return count_nonzero(net) / params_original


METHODS = {"ThresNet": prune_weights, "FilterThresNet": prune_filters}
ALIASES = {"WT": "ThresNet", "FT": "FilterThresNet"}


def canonical_method(name):
    """torchprune's class name for a method name or alias; unknown names list close matches."""
    if name in METHODS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    close = difflib.get_close_matches(name, list(METHODS) + list(ALIASES), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise PruningError(f"unknown pruning method '{name}'{hint} (available: ThresNet/WT, FilterThresNet/FT)")


def prune(net, method, keep_ratio, params_original):
    """Prune ``net`` in place with ``method`` (name or alias) to ``keep_ratio``; returns achieved."""
    return METHODS[canonical_method(method)](net, keep_ratio, params_original)
