"""Export a (pruned) flow as a standalone file: compacted, loadable with only torch + torchdiffeq.

The file is a dict written with ``torch.save`` of plain tensors, numbers and strings (it loads with
``torch.load(path, weights_only=True)``) plus the loader's source (:mod:`.standalone`), so
sampling and log-densities need neither this package nor the runner. Supported: toy and tabular
flows (a chain of CNF blocks with MLP or concatsquash vector fields) and the multiscale image
flows (logit transform, squeezes, CNF blocks with concat-conv fields, factor-out between stages);
any :class:`~torchprune_flows.cnf.FlowNetwork` whose chain holds only these layers, too.

What is written for each kind is in two tables, :data:`FIELD_EXPORTS` (vector fields) and
:data:`LAYER_EXPORTS` (the other layers); the loader keeps the matching ones
(``standalone.FIELD_KINDS`` / ``LAYER_KINDS``), and a test checks they name the same kinds.
"""
import inspect
from typing import NamedTuple

import torch
from torch import nn

from . import standalone
from .cnf import CNF, FlowNetwork, FlowSequence
from .cnf.activations import ACTIVATIONS, activation_of
from .cnf.fixed_layers import LogitTransform, Squeeze
from .networks.concatsquash import ConcatSquashField
from .networks.conv import ConcatConvField
from .networks.mlp import MLPField
from .networks.multiscale import MultiscaleFlow
from .pruning.compact import compact


def _plain(t):
    return t.detach().to(torch.float32).cpu().clone()


def _mlp_layers(field):
    return [dict(weight=_plain(m.weight), bias=_plain(m.bias)) for m in field.net if isinstance(m, nn.Linear)]


def _mlp_activations(field):
    return [m for m in field.net if not isinstance(m, nn.Linear)]


def _concatsquash_layers(field):
    return [dict(weight=_plain(l.main.weight), bias=_plain(l.main.bias), gate_weight=_plain(l.gate.weight),
                 gate_bias=_plain(l.gate.bias), shift_weight=_plain(l.shift.weight)) for l in field.layers]


def _concatconv_layer(layer):
    conv = layer.conv
    for module in (conv, layer.time):
        if (module.stride != (1, 1) or module.dilation != (1, 1) or module.groups != 1
                or module.padding_mode != "zeros" or module.padding[0] != module.padding[1]
                or module.padding != conv.padding):
            raise NotImplementedError("export supports concat convs with stride 1, no dilation or groups "
                                      "and the same zero padding on both sides")
    return dict(weight=_plain(conv.weight), bias=_plain(conv.bias), time_weight=_plain(layer.time.weight),
                padding=int(conv.padding[0]))


def _stack_activations(field):
    return list(field.activations)


class FieldExport(NamedTuple):
    """How one vector-field class is written: the loader's ``kind`` (a key of
    ``standalone.FIELD_KINDS``), ``layers(field)``: one dict of plain tensors and numbers per layer,
    and ``activations(field)``: the activation modules applied between consecutive layers."""

    kind: str
    layers: callable
    activations: callable


class LayerExport(NamedTuple):
    """How one other layer of a chain is written: the loader's ``kind`` (a key of
    ``standalone.LAYER_KINDS``) and ``numbers(layer)``: the dict of numbers it needs."""

    kind: str
    numbers: callable


#: every vector field a CNF block may have in an exported flow, by class (a subclass is written as
#: its nearest listed base). A new field family adds its entry here and its kind to the loader.
FIELD_EXPORTS = {
    MLPField: FieldExport("mlp", _mlp_layers, _mlp_activations),
    ConcatSquashField: FieldExport("concatsquash", _concatsquash_layers, _stack_activations),
    ConcatConvField: FieldExport("concatconv", lambda field: [_concatconv_layer(l) for l in field.layers],
                                 _stack_activations),
}

#: every layer of a chain other than CNF blocks, by class
LAYER_EXPORTS = {
    LogitTransform: LayerExport("logit", lambda layer: dict(alpha=float(layer.alpha))),
    Squeeze: LayerExport("squeeze", lambda layer: {}),
}


def _entry(table, obj):
    """The entry of ``table`` for ``obj``'s class or its nearest base in it, else None."""
    return next((table[cls] for cls in type(obj).__mro__ if cls in table), None)


def _activation_name(field, modules):
    """The one activation name of ``modules`` (None when there are none: a single-layer field)."""
    names = []
    for module in modules:
        activation = activation_of(module)
        if activation is None:
            raise NotImplementedError(f"export writes the activations {', '.join(ACTIVATIONS)} (default arguments); "
                                      f"{type(field).__name__} uses {module!r}")
        names.append(activation.name)
    if len(set(names)) > 1:
        raise NotImplementedError(f"export writes one activation per vector field; {type(field).__name__} "
                                  f"uses {', '.join(sorted(set(names)))}")
    return names[0] if names else None


def _block(cnf):
    field = cnf.vector_field
    entry = _entry(FIELD_EXPORTS, field)
    if entry is None:
        raise NotImplementedError(f"export supports the vector fields {', '.join(c.__name__ for c in FIELD_EXPORTS)}, "
                                  f"not {type(field).__name__}")
    activation = _activation_name(field, entry.activations(field))
    spec = cnf.solver
    if spec.resolved_backend == "torchdyn":  # native's dopri5 takes torchdiffeq's steps (to rounding)
        raise NotImplementedError("export writes torchdiffeq solver options; the block uses torchdyn")
    options = {"step_size": spec.step_size} if spec.fixed_step else {"max_num_steps": spec.max_num_steps}
    return dict(kind=entry.kind, activation=activation, layers=entry.layers(field),
                end_time=float(cnf.odefunc.end_time.detach()), divergence=cnf.odefunc.divergence,
                probe=cnf.odefunc.probe_kind,
                solver=dict(method=spec.method, atol=spec.atol, rtol=spec.rtol, options=options))


def _layers(layers):
    """The exported layers of a chain, :class:`FlowSequence` s flattened."""
    out = []
    for layer in layers:
        entry = _entry(LAYER_EXPORTS, layer)
        if isinstance(layer, FlowSequence):
            out += _layers(layer.layers)
        elif isinstance(layer, CNF):
            out.append(_block(layer))
        elif entry is not None:
            out.append(dict(kind=entry.kind, **entry.numbers(layer)))
        else:
            kinds = ", ".join(["CNF", *(cls.__name__ for cls in LAYER_EXPORTS)])
            raise NotImplementedError(f"export supports the layers {kinds}, not {type(layer).__name__}")
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
