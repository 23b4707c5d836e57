"""Masks on weights and biases, kept with ``torch.nn.utils.prune``, and parameter counting.

Each pruned tensor carries exactly one mask (a new mask is combined with the old one, so
cascaded pruning never revives an entry); the effective tensor ``orig * mask`` is recomputed
before every forward call, so pruned entries stay zero through any amount of retraining.
"""
import torch
from torch.nn.utils import prune


def current_mask(module, name):
    mask = getattr(module, name + "_mask", None)
    if mask is not None:
        return mask
    return torch.ones_like(getattr(module, name), dtype=torch.bool)


def set_mask(module, name, mask):
    """Prune ``module.<name>`` with ``mask`` combined with any mask it already has."""
    combined = current_mask(module, name).bool() & mask.bool()
    if prune.is_pruned(module) and hasattr(module, name + "_orig"):
        prune.remove(module, name)
    prune.custom_from_mask(module, name, combined.to(getattr(module, name).dtype))


def get_masks(net):
    """``{"<module>.<tensor>": bool mask}`` for every pruned tensor of ``net``."""
    return {
        f"{module_name}.{buffer_name[:-5]}" if module_name else buffer_name[:-5]: buffer.bool().clone()
        for module_name, module in net.named_modules()
        for buffer_name, buffer in module.named_buffers(recurse=False)
        if buffer_name.endswith("_mask")
    }


def apply_masks(net, masks):
    modules = dict(net.named_modules())
    for key, mask in masks.items():
        module_name, _, tensor_name = key.rpartition(".")
        set_mask(modules[module_name], tensor_name, mask)


@torch.no_grad()
def refresh_pruned_tensors(net):
    """Recompute every pruned ``weight = weight_orig * weight_mask`` now.

    torch recomputes them only before a forward call, so after an optimizer step the attribute
    still holds the weights from before the step; anything that reads them must refresh first.
    """
    for module in net.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                hook(module, None)


def effective_tensors(net):
    """``{name: tensor}`` of every parameter as the network uses it (masks applied)."""
    refresh_pruned_tensors(net)
    out = {}
    for module_name, module in net.named_modules():
        for name, param in module.named_parameters(recurse=False):
            base = name[:-5] if name.endswith("_orig") else name
            tensor = getattr(module, base) if name.endswith("_orig") else param
            out[f"{module_name}.{base}" if module_name else base] = tensor
    return out


def count_parameters(net):
    """Number of parameter entries (pruned or not)."""
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def count_nonzero(net):
    """Number of nonzero parameter entries as the network uses them."""
    return int(sum((t != 0).sum().item() for t in effective_tensors(net).values()))


@torch.no_grad()
def export_state(net):
    """A checkpointable state: effective parameters and buffers (no ``_orig``) plus the masks."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items()
             if not k.endswith("_orig") and not k.endswith("_mask")}
    state.update({k: v.detach().clone() for k, v in effective_tensors(net).items()})
    return {"state_dict": state, "masks": get_masks(net)}


@torch.no_grad()
def import_state(net, exported):
    """Inverse of :func:`export_state` on a freshly built (unpruned) network of the same shape."""
    for module in net.modules():
        for name in [n[:-5] for n, _ in module.named_parameters(recurse=False) if n.endswith("_orig")]:
            prune.remove(module, name)
    net.load_state_dict(exported["state_dict"])
    apply_masks(net, exported["masks"])
    return net
