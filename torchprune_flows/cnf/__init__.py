"""The CNF core shared by every flow: augmented dynamics, divergence, solvers, NFE counters."""
from .cnf import CNF, cnf_blocks, nfe_counts, set_solver, without_divergence
from .dynamics import DIVERGENCES, AugmentedDynamics
from .flow import FlowNetwork, standard_normal_logprob
from .solver import SolverError, SolverSpec, backward, integrate

__all__ = [
    "CNF", "DIVERGENCES", "AugmentedDynamics", "FlowNetwork", "SolverError", "SolverSpec", "backward",
    "cnf_blocks", "integrate", "nfe_counts", "set_solver", "standard_normal_logprob",
    "without_divergence",
]
