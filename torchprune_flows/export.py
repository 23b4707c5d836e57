"""Export a (pruned) flow as a standalone file: compacted, loadable with only torch + torchdiffeq.

The file is a dict written with ``torch.save`` of plain tensors, numbers and strings (it loads with
``torch.load(path, weights_only=True)``) plus the loader's source (:mod:`.standalone`), so
sampling and log-densities need neither this package nor the runner. Supported: toy and tabular
flows (a chain of CNF blocks with MLP or concatsquash vector fields) and the multiscale image
flows (logit transform, squeezes, CNF blocks with concat-conv fields, factor-out between stages);
any :class:`~torchprune_flows.cnf.FlowNetwork` whose chain holds only these layers, too.
"""
import inspect

import torch
from torch import nn

from . import standalone
from .cnf import CNF, FlowNetwork, FlowSequence
from .cnf.fixed_layers import LogitTransform, Squeeze
from .networks.concatsquash import ConcatSquashField
from .networks.conv import ConcatConvField
from .networks.mlp import ACTIVATIONS, MLPField
from .networks.multiscale import MultiscaleFlow
from .pruning.compact import compact


def _activation_name(field):
    for module in field.modules():
        for name, cls in ACTIVATIONS.items():
            if type(module) is cls:
                return name
    return "tanh"  # a single-layer field has no activation; never applied


def _plain(t):
    return t.detach().to(torch.float32).cpu().clone()


def _conv_layer(layer):
    conv = layer.conv
    for module in (conv, layer.time):
        if (module.stride != (1, 1) or module.dilation != (1, 1) or module.groups != 1
                or module.padding_mode != "zeros" or module.padding[0] != module.padding[1]
                or module.padding != conv.padding):
            raise NotImplementedError("export supports concat convs with stride 1, no dilation or groups "
                                      "and the same zero padding on both sides")
    return dict(weight=_plain(conv.weight), bias=_plain(conv.bias), time_weight=_plain(layer.time.weight),
                padding=int(conv.padding[0]))


def _block(cnf):
    field = cnf.vector_field
    if isinstance(field, MLPField):
        layers = [dict(weight=_plain(m.weight), bias=_plain(m.bias)) for m in field.net if isinstance(m, nn.Linear)]
        kind = "mlp"
    elif isinstance(field, ConcatSquashField):
        layers = [dict(weight=_plain(l.main.weight), bias=_plain(l.main.bias), gate_weight=_plain(l.gate.weight),
                       gate_bias=_plain(l.gate.bias), shift_weight=_plain(l.shift.weight)) for l in field.layers]
        kind = "concatsquash"
    elif isinstance(field, ConcatConvField):
        layers = [_conv_layer(l) for l in field.layers]
        kind = "concatconv"
    else:
        raise NotImplementedError("export supports MLP, concatsquash and concat-conv vector fields, "
                                  f"not {type(field).__name__}")
    spec = cnf.solver
    if spec.resolved_backend == "torchdyn":  # native's dopri5 takes torchdiffeq's steps (to rounding)
        raise NotImplementedError("export writes torchdiffeq solver options; the block uses torchdyn")
    options = {"step_size": spec.step_size} if spec.fixed_step else {"max_num_steps": spec.max_num_steps}
    return dict(kind=kind, activation=_activation_name(field), layers=layers,
                end_time=float(cnf.odefunc.end_time.detach()), divergence=cnf.odefunc.divergence,
                probe=cnf.odefunc.probe_kind,
                solver=dict(method=spec.method, atol=spec.atol, rtol=spec.rtol, options=options))


def _layers(layers):
    """The exported layers of a chain, :class:`FlowSequence` s flattened."""
    out = []
    for layer in layers:
        if isinstance(layer, FlowSequence):
            out += _layers(layer.layers)
        elif isinstance(layer, CNF):
            out.append(_block(layer))
        elif isinstance(layer, LogitTransform):
            out.append(dict(kind="logit", alpha=float(layer.alpha)))
        elif isinstance(layer, Squeeze):
            out.append(dict(kind="squeeze"))
        else:
            raise NotImplementedError(f"export supports CNF blocks, logit and squeeze layers, not {type(layer).__name__}")
    return out


def exported_dict(net):
    """The content of an exported file for ``net`` (compacted first)."""
    multiscale = isinstance(net, MultiscaleFlow)  # one stage per scale, half the channels factored out between
    if not multiscale and not (isinstance(net, FlowNetwork) and type(net).forward is FlowNetwork.forward):
        raise NotImplementedError("export supports flows made of CNF blocks (toy, tabular and multiscale image "
                                  f"flows); {type(net).__name__} is not one")
    net = compact(net)
    stages = [_layers(stage.layers) for stage in net.chain] if multiscale else [_layers(net.chain)]
    return dict(format=standalone.FORMAT, data_shape=list(net.data_shape), stages=stages,
                loader=inspect.getsource(standalone))


def export_flow(net, path):
    """Write ``net`` (pruned or not) compacted as a standalone file at ``path``; returns ``path``.

    Load it with ``d = torch.load(path, weights_only=True); ns = {}; exec(d["loader"], ns);
    flow = ns["StandaloneFlow"](d)``; :mod:`torchprune_flows.standalone` documents ``flow``.
    """
    torch.save(exported_dict(net), path)
    return path
