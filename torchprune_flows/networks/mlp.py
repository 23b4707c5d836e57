"""Multilayer-perceptron vector fields."""

from torch import nn

from ..cnf.activations import ACTIVATIONS as ACTIVATION_TABLE
from ..cnf.affine_hutchinson import activation_of, linear_layer
from ..registry import Choices
from ..registry.suggest import did_you_mean

#: name -> module class of every activation a field may use (the table: :mod:`torchprune_flows.cnf.activations`)
ACTIVATIONS = {name: activation.module for name, activation in ACTIVATION_TABLE.items()}


def check_activation(name):
    """Raise ``ValueError`` (with close matches) unless ``name`` is in :data:`ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        hint = did_you_mean(name, ACTIVATIONS, n=2)
        raise ValueError(f"unknown activation '{name}'; {hint + ' ' if hint else ''}choose from {', '.join(ACTIVATIONS)}")


#: the ``{activation}`` field of the network families' names
ACTIVATION_CHOICES = Choices(ACTIVATIONS, check=check_activation)


def make_activation(name):
    check_activation(name)
    return ACTIVATIONS[name]()


class MLPField(nn.Module):
    """Autonomous ``f(t, z) = MLP(z)``: ``Linear(D, H), act, [Linear(H, H), act] x (L-2), Linear(H, D)``.

    ``dim`` is D, ``hidden_width`` the int H, ``num_linear_layers`` the L Linear layers (L - 1
    hidden layers). The Linear layers form one chain for structured pruning: hidden units may be
    removed, the D output units never.
    """

    def __init__(self, dim, hidden_width, num_linear_layers, activation):
        super().__init__()
        if num_linear_layers < 1:
            raise ValueError(f"an MLP vector field needs at least 1 layer, got {num_linear_layers}")
        widths = [dim] + [hidden_width] * (num_linear_layers - 1) + [dim]
        layers = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(w_in, w_out))
            if i < num_linear_layers - 1:
                layers.append(make_activation(activation))
        self.net = nn.Sequential(*layers)

    #: autonomous: the affine stack is the same at every time of a solve (built once per solve)
    constant_affine_stack = True

    def forward(self, t, z):
        return self.net(z)

    def as_affine_stack(self, t, like):
        """``(layers, activations)`` for :func:`~torchprune_flows.cnf.affine_hutchinson.field_and_hutchinson`,
        or None when a module is not one that path reproduces (then the generic path runs)."""
        linears, activations = list(self.net)[0::2], [activation_of(m) for m in list(self.net)[1::2]]
        layers = [linear_layer(m) for m in linears]
        if any(x is None for x in layers + activations) or len(activations) != len(linears) - 1:
            return None
        return layers, activations

    def structured_chains(self):
        """Linear layers in order, each with the offset of its inputs fed by the previous one."""
        return [[(m, 0) for m in self.net if isinstance(m, nn.Linear)]]
