"""Export a (pruned) flow as a standalone file: compacted, loadable with only torch + torchdiffeq.

The file is a dict written with ``torch.save`` of plain tensors, numbers and strings (it loads with
``torch.load(path, weights_only=True)``) plus the loader's source (:mod:`.standalone`), so
sampling and log-densities need neither this package nor the runner. Supported: flows whose
CNF blocks have MLP (toy) or concatsquash (tabular) vector fields; the multiscale image flows
are not exported yet.
"""
import inspect

import torch
from torch import nn

from . import standalone
from .cnf import CNF
from .networks.concatsquash import ConcatSquashField
from .networks.mlp import ACTIVATIONS, MLPField
from .pruning.compact import compact


def _activation_name(field):
    for module in field.modules():
        for name, cls in ACTIVATIONS.items():
            if type(module) is cls:
                return name
    return "tanh"  # a single-layer field has no activation; never applied


def _plain(t):
    return t.detach().to(torch.float32).cpu().clone()


def _block(cnf):
    field = cnf.vector_field
    if isinstance(field, MLPField):
        layers = [dict(weight=_plain(m.weight), bias=_plain(m.bias)) for m in field.net if isinstance(m, nn.Linear)]
        kind = "mlp"
    elif isinstance(field, ConcatSquashField):
        layers = [dict(weight=_plain(l.main.weight), bias=_plain(l.main.bias), gate_weight=_plain(l.gate.weight),
                       gate_bias=_plain(l.gate.bias), shift_weight=_plain(l.shift.weight)) for l in field.layers]
        kind = "concatsquash"
    else:
        raise NotImplementedError(f"export supports MLP and concatsquash vector fields, not {type(field).__name__}")
    spec = cnf.solver
    if spec.backend != "torchdiffeq":
        raise NotImplementedError("export writes torchdiffeq solver options; the block uses " + spec.backend)
    options = {"step_size": spec.step_size} if spec.fixed_step else {"max_num_steps": spec.max_num_steps}
    return dict(kind=kind, activation=_activation_name(field), layers=layers,
                end_time=float(cnf.odefunc.end_time.detach()), divergence=cnf.odefunc.divergence,
                solver=dict(method=spec.method, atol=spec.atol, rtol=spec.rtol, options=options))


def exported_dict(net):
    """The content of an exported file for ``net`` (compacted first)."""
    net = compact(net)
    chain = list(getattr(net, "chain", []))
    if not chain or not all(isinstance(layer, CNF) for layer in chain):
        raise NotImplementedError("export supports flows made of CNF blocks only (toy and tabular flows); "
                                  f"{type(net).__name__} has other layers")
    return dict(format=standalone.FORMAT, data_shape=list(net.data_shape), blocks=[_block(c) for c in chain],
                loader=inspect.getsource(standalone))


def export_flow(net, path):
    """Write ``net`` (pruned or not) compacted as a standalone file at ``path``; returns ``path``."""
    torch.save(exported_dict(net), path)
    return path
