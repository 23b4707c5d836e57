"""WT (``ThresNet``, unstructured magnitude) and FT (``FilterThresNet``, structured L1) pruning,
the two built-in entries of the method registry (``torchprune_flows.register_method``).

Both reach a target *keep ratio*, by default (``over="all_parameters"``, torchprune's
``net.size()``) nonzero entries over all parameters of the pruned network divided by the
parameter count of the original network (biases and non-prunable layers count); with
``over="all_parameters_with_removed_unit_biases"`` the same, except that FT counts the bias of
every unit it removed as still there (torchprune v2.2.0's FT zeroes a unit's weights but leaves
its bias, which no longer affects the output); with ``over="prunable_weights"`` nonzero weights
of the prunable layers over their weight count (biases and every other parameter left out).
Cascaded calls only ever add to the existing masks.
"""
import torch


from ..errors import UserError, check_keep_ratio
from ..registry import METHODS, register_method
from ..registry.suggest import did_you_mean
from .masks import count_nonzero, current_mask, effective_tensors, refresh_pruned_tensors, set_mask
from .protocol import prunable_layers, structured_chains, unit_companions


class PruningError(UserError, ValueError):
    pass


#: What a keep ratio counts (``experiments.keepRatioOver``): every parameter; every parameter
#: with FT's removed units' biases counted as kept (torchprune v2.2.0's FT count); or only the
#: weights of the prunable layers (for nets of Linear layers, torchprune's FLOP ratio).
KEEP_RATIO_COUNTS = ("all_parameters", "all_parameters_with_removed_unit_biases", "prunable_weights")


def _check_count(over):
    if over not in KEEP_RATIO_COUNTS:
        raise PruningError(f"unknown keep-ratio count '{over}'; choose from {', '.join(KEEP_RATIO_COUNTS)}")


def _check_ratio(keep_ratio):
    check_keep_ratio(keep_ratio, error=PruningError)


def _unit_view(tensor):
    """Weights grouped per output unit: (out, everything else)."""
    return tensor.reshape(tensor.shape[0], -1)


class _MaskPlan:
    """Candidate masks for a network, evaluated without touching it until ``commit``."""

    def __init__(self, net, companions):
        self.net = net
        self.companions = companions  # id(layer) -> time-only modules whose rows are its units
        self.masks = {}  # (module, tensor name) -> bool mask

    def restrict(self, module, name, mask):
        key = (module, name)
        self.masks[key] = self.mask_of(module, name) & mask

    def mask_of(self, module, name):
        return self.masks.get((module, name), current_mask(module, name).bool())

    def remove_units(self, producer, units, consumer=None, offset=0):
        """Remove output units: their rows and biases (in the producer and its time-only
        companions), and the consumer's columns reading them."""
        rows = torch.ones(producer.weight.shape[0], dtype=torch.bool, device=producer.weight.device)
        rows[units] = False
        for module in [producer, *self.companions.get(id(producer), [])]:
            self.restrict(module, "weight", rows.view(-1, *[1] * (module.weight.dim() - 1)).expand_as(module.weight))
            if module.bias is not None:
                self.restrict(module, "bias", rows)
        if consumer is not None:
            columns = torch.ones_like(consumer.weight, dtype=torch.bool)
            columns[:, offset + units] = False
            self.restrict(consumer, "weight", columns)

    @torch.no_grad()
    def nonzero(self, fixed_nonzero, layers, names=("weight", "bias"), unmasked=()):
        """Nonzero entries of ``names`` in ``layers`` under the plan's masks, plus
        ``fixed_nonzero``; the tensors named in ``unmasked`` count whole, pruned or not."""
        total = fixed_nonzero
        for layer in layers:
            for name in names:
                tensor = getattr(layer, name)
                if tensor is None:
                    continue
                if name in unmasked:
                    total += tensor.numel()
                else:
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


def _chain_pairs(chains):
    """(producer, consumer, consumer input offset) for consecutive layers of every chain."""
    return [(producer, consumer, offset) for chain in chains
            for (producer, _), (consumer, offset) in zip(chain[:-1], chain[1:])]


def _remove_dead_units(plan, chains):
    """Drop the rows and biases of units whose every outgoing weight is pruned (no effect on output)."""
    for producer, consumer, offset in reversed(_chain_pairs(chains)):  # output first: removals propagate back
        w = plan.mask_of(consumer, "weight") & (consumer.weight != 0)
        outgoing = w.transpose(0, 1).reshape(w.shape[1], -1)[offset:offset + producer.weight.shape[0]]
        dead = torch.nonzero(~outgoing.any(dim=1)).flatten()
        if len(dead):
            plan.remove_units(producer, dead)


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
def _prune_to_ratio(net, keep_ratio, params_original, candidate_plans, over="all_parameters",
                    removes_units=False):
    """Shared driver: ``candidate_plans(net, layers, chains, companions) -> (plan_for(k), k_max)``
    gives plans whose nonzero count does not decrease with k; commit the one closest to the target.
    ``over`` picks what is counted (:data:`KEEP_RATIO_COUNTS`); ``params_original`` is the
    denominator of the ``all_parameters`` counts, while ``prunable_weights`` divides by the
    prunable layers' weight count (pruning masks entries, never shapes, so the net itself holds
    it). ``removes_units``: the method is FT, whose removed biases the middle count keeps."""
    _check_ratio(keep_ratio)
    _check_count(over)
    refresh_pruned_tensors(net)
    layers = prunable_layers(net)
    if not layers:
        raise PruningError(f"{type(net).__name__} has no prunable layers: give it plain nn.Linear / nn.Conv2d "
                           "layers, or name them in its vector fields' structured_chains()")
    chains = structured_chains(net)
    companions = unit_companions(net)
    counted = layers + [module for layer in layers for module in companions.get(id(layer), [])]
    fixed = _fixed_nonzero(net, counted)
    plan_for, k_max = candidate_plans(net, layers, chains, companions)
    if over == "prunable_weights":
        total = sum(layer.weight.numel() for layer in layers)

        def count_for(k):
            plan = plan_for(k)
            return plan.nonzero(0, layers, names=("weight",)), plan
    else:
        total = params_original
        # torchprune's FT never zeroes a bias, so every bias stays in its count (a cascade's
        # earlier masks have zeroed ours, values included: count them by their size)
        unmasked = ("bias",) if over == "all_parameters_with_removed_unit_biases" and removes_units else ()

        def count_for(k):
            plan = plan_for(k)
            return plan.nonzero(fixed, counted, unmasked=unmasked), plan

    reached, plan = _closest(count_for, 0, k_max, keep_ratio * total)
    plan.commit()
    return (count_nonzero(net) if over == "all_parameters" else reached) / total


def _time_weights(layers, chains):
    """Per layer, a bool tensor marking the weights that read time inputs (the first
    ``input_offset`` input columns of a chain layer): no method prunes them."""
    offsets = {id(layer): offset for chain in chains for layer, offset in chain}
    marks = []
    for layer in layers:
        mark = torch.zeros_like(layer.weight, dtype=torch.bool)
        mark[:, :offsets.get(id(layer), 0)] = True
        marks.append(mark.flatten())
    return torch.cat(marks)


def _threshold_plans(net, layers, chains, companions):
    """WT candidates: keep the k largest-magnitude weights, then drop units left without outputs.
    Weights reading time are kept (they are not scored), so pruning never removes time dependence."""
    time_weights = _time_weights(layers, chains)
    magnitudes = torch.cat([(l.weight.abs() * current_mask(l, "weight")).flatten() for l in layers])
    magnitudes[time_weights] = 0.0
    order = torch.argsort(magnitudes, descending=True, stable=True)
    sizes = [l.weight.numel() for l in layers]

    def plan_for(k):
        keep = time_weights.clone()
        keep[order[:k]] = True
        plan = _MaskPlan(net, companions)
        for layer, mask in zip(layers, torch.split(keep, sizes)):
            plan.restrict(layer, "weight", mask.view_as(layer.weight))
        _remove_dead_units(plan, chains)
        return plan

    return plan_for, int((magnitudes != 0).sum())


def _unit_plans(net, layers, chains, companions):
    """FT candidates: after k steps every layer keeps the same fraction of its strongest units
    (up to one unit), units given back one at a time in order of the fraction they represent."""
    scored = []  # (producer, consumer, offset, units from weakest to strongest, number alive)
    for producer, consumer, offset in _chain_pairs(chains):
        mask = current_mask(producer, "weight")
        alive = _unit_view(mask).any(dim=1)
        score = _unit_view((producer.weight * mask).abs()).sum(dim=1)
        score[~alive] = -1.0
        scored.append((producer, consumer, offset, torch.argsort(score, stable=True), int(alive.sum())))
    events = sorted((i / len(order), j) for j, (_, _, _, order, _) in enumerate(scored)
                    for i in range(1, len(order) + 1))

    def plan_for(step):
        kept = [0] * len(scored)
        for _, j in events[:step]:
            kept[j] += 1
        plan = _MaskPlan(net, companions)
        for (producer, consumer, offset, order, alive), keep in zip(scored, kept):
            keep = min(alive, max(1, keep))  # every layer keeps at least one unit
            plan.remove_units(producer, order[: len(order) - keep], consumer, offset)
        return plan

    return plan_for, len(events)


@register_method("ThresNet", alias="WT", in_torchprune=True)
def prune_weights(net, keep_ratio, params_original, over="all_parameters"):
    """WT: keep the largest-magnitude weights of all prunable layers under one global threshold.

    Biases are not scored; a unit whose outgoing weights are all pruned loses its row and bias
    too, since it no longer affects the output. Returns the achieved keep ratio (counted
    ``over`` :data:`KEEP_RATIO_COUNTS`).
    """
    return _prune_to_ratio(net, keep_ratio, params_original, _threshold_plans, over)


@register_method("FilterThresNet", alias="FT", structured=True, in_torchprune=True)
def prune_filters(net, keep_ratio, params_original, over="all_parameters"):
    """FT: in every prunable layer keep the same fraction of output units (Linear rows / Conv2d
    filters), chosen by the L1 norm of their weights; the last layer of each vector field keeps
    all its outputs, and weights reading time inputs are never scored. Removing a unit zeroes
    its row, its bias, the rows of its time-only companions (concatsquash gate and shift, the
    time conv of a concat conv) and the input columns that read it in the next layer. Returns the achieved
    keep ratio (the closest a uniform fraction can get; counted ``over`` :data:`KEEP_RATIO_COUNTS`).
    """
    return _prune_to_ratio(net, keep_ratio, params_original, _unit_plans, over, removes_units=True)


def pruning_method(name):
    """The registered :class:`~torchprune_flows.registry.PruningMethod` of a name or alias;
    unknown names raise :class:`PruningError` listing close matches and every method."""
    while True:
        methods = [METHODS.get(n) for n in METHODS.names()]
        for method in methods:
            if name in (method.name, method.alias):
                return method
        if not METHODS._load_plugins():  # an entry-point plugin may register it (loaded once)
            break
    known = [n for m in methods for n in (m.name, m.alias) if n]
    hint = did_you_mean(name, known, n=3, cutoff=0.4, ignore_case=True)
    hint = f"; {hint}" if hint else ""
    available = ", ".join(f"{m.name}/{m.alias}" if m.alias else m.name for m in methods)
    raise PruningError(f"unknown pruning method '{name}'{hint} (available: {available}; a plugin adds one "
                       "with torchprune_flows.register_method)")


def canonical_method(name):
    """The registered name of a method name or alias (torchprune's class name for WT and FT)."""
    return pruning_method(name).name


def method_names():
    """Every registered method's name (sorted)."""
    return METHODS.names()


def prune(net, method, keep_ratio, params_original, over="all_parameters"):
    """Prune ``net`` in place with ``method`` (name or alias) to ``keep_ratio`` counted ``over``
    (:data:`KEEP_RATIO_COUNTS`); returns the achieved keep ratio in that count."""
    return pruning_method(method)(net, keep_ratio, params_original, over)
