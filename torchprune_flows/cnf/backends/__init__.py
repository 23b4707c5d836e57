"""The solver backends as a table: ``BACKENDS[name]`` holds its methods and its integrate function.

``integrate(func, y0, t0, t1, spec, adjoint_params) -> y(t1)`` solves ``dy/dt = func(t, y)`` as
``spec`` (a :class:`~torchprune_flows.cnf.solver.SolverSpec`) says, by the adjoint method or
backprop through the solver. Adding a backend is one module and one entry here.
"""
from typing import Callable, NamedTuple, Tuple

from . import native, with_torchdiffeq, with_torchdyn

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5")
FIXED_METHODS = ("euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")


class Backend(NamedTuple):
    """A solver backend: the methods it integrates with and its integrate function;
    ``checks_finite``: its solver raises :class:`~torchprune_flows.cnf.errors.SolverError` on a
    non-finite state by itself (the dynamics then skip their own check at every evaluation)."""

    methods: Tuple[str, ...]
    integrate: Callable
    checks_finite: bool = False


BACKENDS = {
    "native": Backend(native.METHODS, native.integrate, checks_finite=True),
    "torchdiffeq": Backend(with_torchdiffeq.METHODS, with_torchdiffeq.integrate),
    "torchdyn": Backend(with_torchdyn.METHODS, with_torchdyn.integrate),
}

#: ``backend: auto`` (the default): our own Dormand–Prince adjoint where it applies, since it is
#: the cheapest (README, "Solver cost"); torchdiffeq for every other method and for backprop
#: through the solver, whose step sizes torchdiffeq keeps in the graph; torchdyn for a method only
#: it has (tsit5)
AUTO = "auto"


def resolve(backend, method, adjoint):
    """The backend name a solve with ``backend`` (possibly ``auto``) and ``method`` runs on."""
    if backend != AUTO:
        return backend
    if adjoint and method in native.METHODS:
        return "native"
    return "torchdiffeq" if method in BACKENDS["torchdiffeq"].methods else "torchdyn"

__all__ = ["ADAPTIVE_METHODS", "AUTO", "BACKENDS", "FIXED_METHODS", "Backend", "resolve"]
