"""Tabular FFJORD flows ``ffjord_l{L}_hm{hm}_f{blocks}_{act}`` (POWER ... BSDS300).

A chain of ``blocks`` CNFs over R^D, each with a concatsquash vector field of L hidden layers of
hm*D units, so L + 1 layers ``D -> hm*D -> ... -> D`` (L is FFJORD's ``nhidden``; the toy flows'
``l{L}`` counts all L layers instead), Hutchinson divergence (Gaussian probe), dopri5 with atol
1e-8 and rtol 1e-6, adjoint gradients and a learnable end time per block (T = 1 at the start).

The adjoint's backward solve runs at 2x those tolerances (``adjoint_tol_factor``; 1 gives the
forward's): in float32, ~20 % fewer backward evaluations than at 1 on POWER and GAS with
gradients as accurate; at 3, as few evaluations but POWER's and GAS's seminorm gradients 2-4x
further off (the measurements: README, "Solver cost").
"""
from ..cnf import CNF, FlowNetwork
from ..cnf.solver import solver_spec
from ..pruning import PrunableMixin
from ..registry import register_network
from .concatsquash import ConcatSquashField
from .mlp import ACTIVATION_CHOICES
from .solver_suffix import SUFFIX_CHOICES, parse_solver_suffix

TABULAR_SOLVER = dict(method="dopri5", atol=1e-8, rtol=1e-6, adjoint=True, adjoint_tol_factor=2.0)


class TabularFlow(PrunableMixin, FlowNetwork):
    """``blocks`` CNF blocks with concatsquash vector fields; prior N(0, I) over R^dim."""

    def __init__(self, dim, num_hidden_layers, hidden_multiplier, blocks, activation, solver, probe="gaussian",
                 end_time=1.0, train_end_time=True):
        hidden_width = hidden_multiplier * dim
        cnfs = [CNF(ConcatSquashField(dim, hidden_width, num_hidden_layers + 1, activation), divergence="hutchinson", probe=probe,
                    solver=solver, end_time=end_time, train_end_time=train_end_time)
                for _ in range(blocks)]
        super().__init__(cnfs, (dim,))


@register_network("ffjord_l{num_hidden_layers:d}_hm{hidden_multiplier:d}_f{blocks:d}_{activation}[_{suffix:*}]",
                  examples=[("ffjord_l1_hm2_f2_softplus_high_tol", {"num_classes": 3})],
                  choices={"activation": ACTIVATION_CHOICES, "suffix": SUFFIX_CHOICES})
def tabular_flow(num_hidden_layers, hidden_multiplier, blocks, activation, suffix=None, num_classes=None,
                 num_in_channels=None, probe="gaussian", end_time=1.0, train_end_time=True, **solver_kwargs):
    """``num_classes`` is the data dimension D (the config's ``network.outputSize``)."""
    data_dim = num_classes
    if not data_dim:
        raise ValueError("tabular flows need the data dimension: set network.outputSize to D")
    options = dict(TABULAR_SOLVER, **parse_solver_suffix(suffix))
    options.update(solver_kwargs)
    return TabularFlow(data_dim, num_hidden_layers, hidden_multiplier, blocks, activation, solver_spec(options),
                       probe=probe, end_time=end_time, train_end_time=train_end_time)
