"""ODE solver specification and one ``integrate`` call over the backends (:mod:`.backends`)."""
from dataclasses import asdict, dataclass, fields

from .backends import ADAPTIVE_METHODS, AUTO, BACKENDS, FIXED_METHODS, resolve
from .errors import SolverError


@dataclass
class SolverSpec:
    """How a CNF block is integrated.

    ``adjoint`` selects the adjoint method (O(1) memory) instead of backprop through the solver;
    ``seminorm`` measures the adjoint's error on the state and its adjoint only, not on the
    parameter gradients' integral (Kidger et al. 2021). It is the default: it needs fewer backward
    evaluations than the plain adjoint on the time-dependent tabular nets (README, "Solver cost"),
    at gradients that differ from the plain adjoint's by about the solver tolerance. Every
    backend honours it;
    ``backend``: a name in :data:`~torchprune_flows.cnf.backends.BACKENDS`, or ``auto`` (our own
    Dormand–Prince adjoint for dopri5 adjoint solves, torchdiffeq otherwise: :attr:`resolved_backend`);
    ``adjoint_tol_factor`` scales atol and rtol for the adjoint's backward solve (the tabular
    flows use 3: see ``networks/tabular.py``);
    ``step_size`` is the step of fixed-step methods (rk4, euler, ...), which always end at t = 1;
    ``max_num_steps`` turns a runaway adaptive solve into a :class:`SolverError`.
    """

    backend: str = AUTO
    method: str = "dopri5"
    atol: float = 1e-5
    rtol: float = 1e-5
    adjoint: bool = True
    seminorm: bool = True
    adjoint_tol_factor: float = 1.0
    step_size: float = 0.05
    max_num_steps: int = 10000

    def __post_init__(self):
        for name in ("adjoint", "seminorm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"solver option '{name}' must be true or false, got {getattr(self, name)!r}")
        for name in ("atol", "rtol", "adjoint_tol_factor", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"solver option '{name}' must be a positive number, got {value!r}")
        if isinstance(self.max_num_steps, bool) or not isinstance(self.max_num_steps, int) or self.max_num_steps < 1:
            raise ValueError(f"solver option 'max_num_steps' must be a positive integer, got {self.max_num_steps!r}")
        if self.backend != AUTO and self.backend not in BACKENDS:
            raise ValueError(f"unknown solver backend '{self.backend}'; choose from {AUTO}, {', '.join(BACKENDS)}")
        if self.method not in ADAPTIVE_METHODS + FIXED_METHODS:
            raise ValueError(
                f"unknown solver method '{self.method}'; choose from "
                f"{', '.join(ADAPTIVE_METHODS + FIXED_METHODS)}"
            )
        methods = BACKENDS[self.resolved_backend].methods
        if self.method not in methods:
            raise ValueError(f"{self.backend} backend has no method '{self.method}'; use {', '.join(methods)}")

    @property
    def fixed_step(self):
        return self.method in FIXED_METHODS

    @property
    def resolved_backend(self):
        """The backend this spec's solves run on (``auto`` resolved)."""
        return resolve(self.backend, self.method, self.adjoint)

    @property
    def max_evals(self):
        """The vector-field evaluations one solve may take before it is stopped as runaway: at most
        ``max_num_steps`` steps of up to 7 stages (and the initial step's 2); None for fixed steps.
        The guard every backend shares (torchdyn has no step limit of its own)."""
        return None if self.fixed_step else 7 * self.max_num_steps + 8

    @property
    def adjoint_tolerances(self):
        """``(atol, rtol)`` of the adjoint's backward solve: the forward's times ``adjoint_tol_factor``."""
        return self.atol * self.adjoint_tol_factor, self.rtol * self.adjoint_tol_factor

    def replace(self, **changes):
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown solver option(s) {sorted(unknown)}; valid: {[f.name for f in fields(self)]}")
        return SolverSpec(**{**asdict(self), **changes})


def solver_spec(options, where="network.kwargs"):
    """A :class:`SolverSpec` from user options (``network.kwargs``, name suffixes), the one check
    every network family uses: unknown keys are named with their key path and close matches."""
    from ..registry.suggest import did_you_mean

    valid = [f.name for f in fields(SolverSpec)]
    for key in options:
        if key not in valid:
            hint = did_you_mean(key, valid, n=2)
            hint = f"; {hint}" if hint else ""
            raise ValueError(f"unknown option '{where}.{key}'{hint} (solver options: {', '.join(valid)})")
    return SolverSpec(**options)


def backward(loss):
    """``loss.backward()``; a failed backward (adjoint) solve raises :class:`SolverError`.

    torchdiffeq signals step-size underflow and non-finite states with ``AssertionError``, which
    in an adjoint solve surfaces from ``loss.backward()``, not from the forward call.
    """
    try:
        loss.backward()
    except AssertionError as err:
        reason = str(err).split(": tensor(")[0].splitlines()[0] if str(err) else "assertion failed"
        raise SolverError(f"ODE solver failed in the backward (adjoint) pass: {reason}") from err


def integrate(func, y0, t0, t1, spec, adjoint_params=()):
    """The state at ``t1`` of ``dy/dt = func(t, y)``, ``y(t0) = y0`` (``t1 < t0`` integrates back)."""
    backend = BACKENDS[spec.resolved_backend]
    try:
        params = tuple(p for p in adjoint_params if p.requires_grad)  # frozen ones get no adjoint
        return backend.integrate(func, y0, float(t0), float(t1), spec, params)
    except AssertionError as err:  # torchdiffeq signals underflow / max steps with asserts
        raise SolverError(f"ODE solver failed: {err}") from err
