"""The CNF core shared by every flow: augmented dynamics, divergence, solvers, NFE counters."""
from .cnf import CNF, cnf_blocks, nfe_counts, set_solver, twice_differentiable, with_divergence, without_divergence
from .dynamics import DIVERGENCES, AugmentedDynamics
from .flow import FlowNetwork, FlowSequence, apply_layers, standard_normal_logprob
from .protocols import FlowLayer, VectorField
from .solver import SolverError, SolverSpec, backward, integrate

__all__ = [
    "CNF", "DIVERGENCES", "AugmentedDynamics", "FlowLayer", "FlowNetwork", "FlowSequence", "SolverError",
    "SolverSpec", "VectorField", "apply_layers", "backward", "cnf_blocks", "integrate", "nfe_counts", "set_solver", "standard_normal_logprob",
    "twice_differentiable", "with_divergence", "without_divergence",
]
