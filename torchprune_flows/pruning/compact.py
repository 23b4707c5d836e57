"""Compaction: a pruned flow made physically smaller, so that it is cheaper to run.

:func:`compact` turns a pruned network (masks from ``torch.nn.utils.prune``) into a deep copy
whose ``nn.Linear`` / ``nn.Conv2d`` layers are smaller: the hidden units that no longer reach
the output are gone, and with them their rows (weights, bias, and the rows of their time-only
companions: concatsquash ``gate`` / ``shift``, the concat conv's ``time`` conv) and the next
layer's input columns that read them. The copy has plain parameters (no masks) and computes
the same function; every CNF block keeps its data dimension, since the outputs of a chain's last
layer are never removed, so probes drawn from the same seed and samples are the same too.

Which units go is read from the network's structured chains (:mod:`.protocol`): a hidden unit
goes when every weight that reads it in the next layer is zero (after the removals further down
the chain), which is exact whatever the activation. FT removes a unit's row, bias, companion rows
and outgoing columns together, so after FT this removes exactly the pruned units; after WT it
removes the units WT left without outputs and leaves the rest dense (see :data:`WT_SPARSE_KERNEL`).

Why not ``torch-pruning`` (PyPI ``torch_pruning`` 1.6.1, looked at for this): its dependency
graph is traced from the ``grad_fn`` graph of one forward pass, and a CNF's forward pass is an
ODE solve inside ``odeint_adjoint`` (one opaque autograd function) whose vector field is
differentiated again for the divergence, so the trace cannot see which layer feeds which; the
chains declared by our vector fields already say it. What would be left to use are its
per-layer slicing functions (``prune_linear_out_channels`` ...), a few lines each here, not worth
a dependency, and they know nothing of the time-only companions.
"""
import copy

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .masks import refresh_pruned_tensors

#: WT's unstructured sparsity is not compacted (the copy has no masks: its zeros run dense); the
#: masked net runs wide layers at density <= 0.08 on CSR kernels where they are faster (this
#: function; measurements in the README, "Solver cost")
WT_SPARSE_KERNEL = "torchprune_flows.cnf.affine_hutchinson.sparse_pattern"


def _strip_masks(net):
    """Turn every ``weight_orig * weight_mask`` reparametrization into a plain parameter."""
    refresh_pruned_tensors(net)
    for module in net.modules():
        names = [n[:-5] for n, _ in module.named_parameters(recurse=False) if n.endswith("_orig")]
        for name in names:
            torch_prune.remove(module, name)


def _columns(layer, offset, count, rows=None):
    """The consumer's weights reading the producer's units, shape (count, everything else),
    only from the consumer's output ``rows`` that stay (all when ``None``)."""
    w = layer.weight.detach()
    if rows is not None:
        w = w.index_select(0, rows.to(w.device))
    return w[:, offset:offset + count].transpose(0, 1).reshape(count, -1)


def _slice(module, dim, keep):
    """Keep only the indices ``keep`` of ``module``'s weight along ``dim`` (0: rows, 1: inputs)."""
    weight = module.weight
    new = nn.Parameter(weight.detach().index_select(dim, keep).clone(), requires_grad=weight.requires_grad)
    module.weight = new
    if dim == 0 and module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach().index_select(0, keep).clone(),
                                   requires_grad=module.bias.requires_grad)
    index = dict(getattr(module, "compact_index", {}))  # dim -> kept indices of the original
    index[dim] = keep.detach().cpu()
    module.compact_index = index
    if isinstance(module, nn.Linear):
        module.in_features, module.out_features = new.shape[1], new.shape[0]
    elif isinstance(module, nn.Conv2d):
        module.in_channels, module.out_channels = new.shape[1] * module.groups, new.shape[0]


def _keep_inputs(layer, offset, keep_units):
    """Input columns of ``layer`` to keep: the ``offset`` time inputs and the kept units' columns."""
    device = layer.weight.device
    return torch.cat([torch.arange(offset, device=device), offset + keep_units.to(device)])


@torch.no_grad()
def compact(net):
    """A deep copy of ``net`` with physically smaller layers and no masks (``net`` is unchanged).

    Hidden units whose outgoing weights are all zero are removed from every structured chain,
    with their companions' rows and the consumer's input columns; the copy gives the same
    outputs (log-densities, samples) up to float rounding. An unpruned network comes back with
    the same shapes. Networks that declare no structured chains only lose their masks.
    """
    # after a training forward the pruned attributes (weight_orig * mask) are autograd graph
    # nodes, which deepcopy refuses: recompute them (same values, the current weights) first
    refresh_pruned_tensors(net)
    out = copy.deepcopy(net)
    _strip_masks(out)
    chains = out.structured_chains() if hasattr(out, "structured_chains") else []
    companions = out.unit_companions() if hasattr(out, "unit_companions") else {}
    for chain in chains:
        # from the output back: a unit read only by removed units is itself removed
        keep_rows = {}
        for (producer, _), (consumer, offset) in reversed(list(zip(chain[:-1], chain[1:]))):
            columns = _columns(consumer, offset, producer.weight.shape[0], keep_rows.get(id(consumer)))
            keep_rows[id(producer)] = torch.nonzero(columns.any(dim=1)).flatten()
        for (producer, _), (consumer, offset) in zip(chain[:-1], chain[1:]):
            keep = keep_rows[id(producer)]
            if len(keep) == producer.weight.shape[0]:
                continue
            for module in [producer, *companions.get(id(producer), [])]:
                _slice(module, 0, keep.to(module.weight.device))
            _slice(consumer, 1, _keep_inputs(consumer, offset, keep))
    return out



@torch.no_grad()
def write_back(compact_net, net):
    """Copy the (trained) parameters of ``compact_net`` = ``compact(net)`` into the pruned ``net``.

    Each sliced module remembers which rows / input columns of the original it kept
    (``compact_index``); those entries of ``net``'s parameters (``weight_orig`` where masked) are
    overwritten, the rest stays as it was: removed entries are masked anyway. So a flow can be
    retrained compact and stored in its original architecture, whose masks stay the source of truth.
    """
    targets = dict(net.named_modules())
    for name, module in compact_net.named_modules():
        target = targets[name]
        index = getattr(module, "compact_index", {})
        for pname, param in module.named_parameters(recurse=False):
            dest = getattr(target, pname + "_orig", None)
            if dest is None:
                dest = getattr(target, pname)
            value = param.detach().to(dest.device, dest.dtype)
            rows = index.get(0)
            if pname == "bias" or dest.dim() == 1:
                if rows is not None and pname == "bias":
                    dest[rows.to(dest.device)] = value
                else:
                    dest.copy_(value)
                continue
            if not index:
                dest.copy_(value)
                continue
            rows = rows if rows is not None else torch.arange(dest.shape[0])
            cols = index.get(1, torch.arange(dest.shape[1]))
            dest[rows.to(dest.device)[:, None], cols.to(dest.device)[None, :]] = value
    refresh_pruned_tensors(net)
    return net
