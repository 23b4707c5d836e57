"""Toy 2-D CNFs (``ffjord_*`` Hutchinson, ``cnf_*`` exact trace) and NODE classifiers (``node_*``).

Names ``{family}_l{L}_h{H}_{activation}[_{suffix}]``: an MLP vector field of L Linear layers
(L - 1 hidden layers of H units each; H is an int). Unlike the tabular flows, whose ``l{L}``
counts hidden layers, L counts *all* layers.
"""
from torch import nn

from ..cnf import CNF, FlowNetwork
from ..cnf.solver import solver_spec
from ..cnf.flow import PRIOR_LAYOUT
from ..pruning import PrunableMixin
from ..registry import register_network
from .mlp import ACTIVATION_CHOICES, MLPField
from .solver_suffix import SUFFIX_CHOICES, parse_solver_suffix

TOY_TEMPLATE = "l{num_linear_layers:d}_h{hidden_width:d}_{activation}[_{suffix:*}]"
TOY_CHOICES = {"activation": ACTIVATION_CHOICES, "suffix": SUFFIX_CHOICES}


def _solver(suffix, default_tol, solver_kwargs):
    options = dict(atol=default_tol, rtol=default_tol)
    options.update(parse_solver_suffix(suffix))
    options.update(solver_kwargs)
    return solver_spec(options)


class ToyFlow(PrunableMixin, FlowNetwork):
    """One CNF block with an autonomous MLP vector field over R^D.

    Its ``"out"`` has torchprune's toy-flow layout (``cat([delta_logp, z], 1)`` with a
    ``"prior"``), so torchprune's own ``NLLPriorLoss`` reads it as the paper's toy configs ask.
    """

    TORCHPRUNE_LAYOUT = PRIOR_LAYOUT

    def __init__(self, dim, hidden_width, num_linear_layers, activation, divergence, probe, solver):
        field = MLPField(dim, hidden_width, num_linear_layers, activation)
        super().__init__([CNF(field, divergence=divergence, probe=probe, solver=solver)], (dim,))


class NeuralODEClassifier(PrunableMixin, nn.Module):
    """Logits = the state at t = 1 of dz/dt = MLP(z), z(0) = x (input and output dimension D)."""

    def __init__(self, dim, hidden_width, num_linear_layers, activation, solver):
        super().__init__()
        field = MLPField(dim, hidden_width, num_linear_layers, activation)
        self.ode = CNF(field, divergence="none", solver=solver)

    def forward(self, x):
        return self.ode(x)[0]


def _flow_factory(divergence):
    def factory(num_linear_layers, hidden_width, activation, suffix=None, num_classes=2, num_in_channels=None,
                probe="gaussian", **solver_kwargs):
        """torchprune's signature: ``num_classes`` is the data dimension D (``network.outputSize``)."""
        data_dim = num_classes
        solver = _solver(suffix, 1e-5, solver_kwargs)
        return ToyFlow(data_dim, hidden_width, num_linear_layers, activation, divergence, probe, solver)

    return factory


register_network("ffjord_" + TOY_TEMPLATE, examples=["ffjord_l2_h8_tanh_high_tol"],
                 choices=TOY_CHOICES)(_flow_factory("hutchinson"))
register_network("cnf_" + TOY_TEMPLATE, examples=["cnf_l3_h6_softplus_high_tol"],
                 choices=TOY_CHOICES)(_flow_factory("exact"))


@register_network("node_" + TOY_TEMPLATE, examples=["node_l2_h8_tanh"], choices=TOY_CHOICES)
def node_classifier(num_linear_layers, hidden_width, activation, suffix=None, num_classes=2, num_in_channels=None,
                    **solver_kwargs):
    """Neural-ODE classifier on 2-D data; tolerances 1e-4 as in the paper's MOON setting.

    ``num_classes`` is torchprune's keyword: the input dimension D, which is also the number of
    logits (the state at t = 1)."""
    data_dim = num_classes
    return NeuralODEClassifier(data_dim, hidden_width, num_linear_layers, activation,
                               _solver(suffix, 1e-4, solver_kwargs))
