"""ODE solver specification and one ``integrate`` call over the torchdiffeq and torchdyn backends."""
from dataclasses import asdict, dataclass, fields

import torch

BACKENDS = ("torchdiffeq", "torchdyn")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5")
FIXED_METHODS = ("euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")


class SolverError(RuntimeError):
    """The solver could not integrate (step size underflow, too many steps, non-finite state)."""


@dataclass
class SolverSpec:
    """How a CNF block is integrated.

    ``adjoint`` selects the adjoint method (O(1) memory) instead of backprop through the solver;
    ``seminorm`` measures the adjoint's error on the state and its adjoint only, not on the
    parameter gradients' integral (Kidger et al. 2021). It is the default: it needs fewer backward
    evaluations than the plain adjoint on the time-dependent tabular nets (README, "Solver cost"),
    at gradients that differ from the plain adjoint's by about the solver tolerance. Both
    backends honour it (on torchdyn through our own adjoint on its solver, :class:`_TorchdynAdjoint`:
    torchdyn 1.0.6's own adjoint hard-codes the seminorm);
    ``adjoint_tol_factor`` scales atol and rtol for the adjoint's backward solve (the tabular
    flows use 3: see ``networks/tabular.py``);
    ``step_size`` is the step of fixed-step methods (rk4, euler, ...), which always end at t = 1;
    ``max_num_steps`` turns a runaway adaptive solve into a :class:`SolverError`.
    """

    backend: str = "torchdiffeq"
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
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown solver backend '{self.backend}'; choose from {', '.join(BACKENDS)}")
        if self.method not in ADAPTIVE_METHODS + FIXED_METHODS:
            raise ValueError(
                f"unknown solver method '{self.method}'; choose from "
                f"{', '.join(ADAPTIVE_METHODS + FIXED_METHODS)}"
            )
        if self.backend == "torchdyn" and self.method not in ("dopri5", "tsit5", "euler", "midpoint", "rk4"):
            raise ValueError(f"torchdyn backend has no method '{self.method}'; use dopri5, tsit5, euler, midpoint or rk4")
        if not self.step_size > 0:
            raise ValueError(f"solver step_size must be positive, got {self.step_size}")

    @property
    def fixed_step(self):
        return self.method in FIXED_METHODS

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
    import difflib

    valid = [f.name for f in fields(SolverSpec)]
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"unknown option '{where}.{key}'{hint} (solver options: {', '.join(valid)})")
    return SolverSpec(**options)


def _torchdiffeq(func, y0, t, spec, adjoint_params):
    import torchdiffeq

    options = {"step_size": spec.step_size} if spec.fixed_step else {"max_num_steps": spec.max_num_steps}
    if not spec.fixed_step:
        # step exactly onto the end time: by default torchdiffeq steps past it and returns its
        # 4th-order dense output there, which on the MINIBOONE net at atol = rtol = 1e-5 put z(T)
        # 6.7e-5 from the exact solution instead of 1.6e-9, at the same NFE; in the adjoint's
        # backward solve it was the seminorm's parameter gradients (outside the error control)
        # that the interpolation spoilt: 5.5e-4 relative error on the MNIST flow, 1.5e-8 now
        options["step_t"] = t[-1:]
    kwargs = dict(rtol=spec.rtol, atol=spec.atol, method=spec.method, options=options)
    if spec.adjoint:
        # the backward solve gets the forward's options (torchdiffeq copies them only when
        # adjoint_options is None): without step_size a fixed-step adjoint takes one step over the
        # whole interval; a seminorm only matters to adaptive steps
        adjoint_options = dict(options, norm="seminorm") if spec.seminorm and not spec.fixed_step else dict(options)
        if "step_t" in adjoint_options:
            # the backward solve ends at the start time; for a decreasing t torchdiffeq runs the
            # adjoint in its own reversed time (-t) without reversing adjoint_options, so give -t0
            adjoint_options["step_t"] = t[:1] if t[-1] > t[0] else -t[:1]
        adjoint_atol, adjoint_rtol = spec.adjoint_tolerances
        return torchdiffeq.odeint_adjoint(
            func, y0, t, adjoint_params=adjoint_params, adjoint_options=adjoint_options,
            adjoint_atol=adjoint_atol, adjoint_rtol=adjoint_rtol, **kwargs
        )[-1]
    return torchdiffeq.odeint(func, y0, t, **kwargs)[-1]


def _torchdyn_grid(t, spec, y0):
    """``t`` and the tolerances for torchdyn: fixed-step methods step on a grid of ``step_size``
    and ignore tolerances (torchdyn warns unless they are its defaults, 1e-3)."""
    if not spec.fixed_step:
        return t, spec.atol, spec.rtol
    n_steps = max(1, int(round(abs(float(t[-1] - t[0])) / spec.step_size)))
    return torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, device=y0.device, dtype=y0.dtype), 1e-3, 1e-3


def _torchdyn(func, y0, t, spec, adjoint_params):
    t, atol, rtol = _torchdyn_grid(t, spec, y0)
    if spec.adjoint:
        adjoint_tolerances = (atol, rtol) if spec.fixed_step else spec.adjoint_tolerances
        return _TorchdynAdjoint.apply(func, spec.method, (atol, rtol), adjoint_tolerances, spec.seminorm,
                                      t, y0, *adjoint_params)
    return _torchdyn_solve(func, y0, t, spec.method, atol, rtol)  # backprop through the solver


def _torchdyn_solve(func, y0, t, method, atol, rtol, seminorm=(False, None)):
    """The state at ``t[-1]`` by ``torchdyn.numerics.odeint``, the field always seeing a scalar time.

    A decreasing ``t`` is reversed here (``y(tau) = x(t0 - tau)``, ``dy/dtau = -f(t0 - tau, y)``
    over increasing ``tau``): torchdyn 1.0.6 reverses it itself, but its initial step size
    estimate (``init_step``) then evaluates the field un-negated at the negated times, outside
    the interval (at s = -0.99 for a solve from 1 to 0) and with the wrong sign.
    """
    from torchdyn.numerics import odeint

    start = t[0]
    if t[-1] < start:
        span = start - t

        def field(tau, y):
            return -func(start - tau.reshape(()), y)
    else:
        span = t

        def field(s, y):
            return func(s.reshape(()), y)
    _, solution = odeint(field, y0, span, method, atol=atol, rtol=rtol, seminorm=seminorm)
    return solution[-1]


class _TorchdynAdjoint(torch.autograd.Function):
    """The adjoint method on torchdyn's solver (``torchdyn.numerics.odeint``).

    Why not torchdyn's own adjoint (``ODEProblem(sensitivity="adjoint")``): torchdyn 1.0.6
    hard-codes the seminorm in it (``numerics/sensitivity.py``, ``seminorm=(True, ...)`` beside a
    TODO, so ``seminorm=False`` was a seminorm adjoint all the same), and it always spends two
    more field evaluations per solve on the gradient of the time span (at t1 before the backward
    solve and at t0 after it), which our blocks never need: their time span is the constant
    [0, 1] and the learnable end time T is a parameter of the field. Here the backward solve
    integrates the state ``y``, its adjoint ``a = dL/dy`` and the parameters' adjoint ``mu``
    from t1 to t0 with ``dy/dt = f``, ``da/dt = -a df/dy``, ``dmu/dt = -a df/dtheta``, its
    error norm on ``(y, a)`` under the seminorm and on everything otherwise; every evaluation is
    one the solver asked for. The stage arithmetic is torchdyn's (one axpy per stage), which on
    the 908,614-element adjoint state of the MINIBOONE net costs far less than torchdiffeq's
    ``sum(k * b, -1)`` over a (N, 7) stage tensor.
    """

    @staticmethod
    def forward(ctx, func, method, tolerances, adjoint_tolerances, seminorm, t, y0, *params):
        y1 = _torchdyn_solve(func, y0, t, method, *tolerances)
        ctx.func, ctx.method, ctx.seminorm, ctx.params = func, method, seminorm, params
        ctx.adjoint_tolerances = adjoint_tolerances
        ctx.save_for_backward(t, y1)
        return y1

    @staticmethod
    def backward(ctx, grad_y1):
        t, y1 = ctx.saved_tensors
        func, params = ctx.func, ctx.params
        n = y1.numel()
        sizes = [p.numel() for p in params]

        def adjoint_dynamics(s, state):
            with torch.enable_grad():
                y = state[:n].view_as(y1).detach().requires_grad_(True)
                f = func(s, y)
                grads = torch.autograd.grad(f, (y, *params), -state[n:2 * n].view_as(y1), allow_unused=True)
            parts = [f.reshape(-1), grads[0].reshape(-1)]
            parts += [g.reshape(-1) if g is not None else y1.new_zeros(size) for g, size in zip(grads[1:], sizes)]
            return torch.cat(parts)

        state = torch.cat([y1.detach().reshape(-1), grad_y1.reshape(-1), y1.new_zeros(sum(sizes))])
        final = _torchdyn_solve(adjoint_dynamics, state, t.flip(0), ctx.method, *ctx.adjoint_tolerances,
                                seminorm=(ctx.seminorm, 2 * n))
        grad_params = [g.view_as(p) for g, p in zip(torch.split(final[2 * n:], sizes), params)]
        return (None, None, None, None, None, None, final[n:2 * n].view_as(y1), *grad_params)


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
    t = torch.tensor([t0, t1], dtype=y0.dtype, device=y0.device)
    try:
        if spec.backend == "torchdyn":
            y1 = _torchdyn(func, y0, t, spec, tuple(adjoint_params))
        else:
            y1 = _torchdiffeq(func, y0, t, spec, tuple(adjoint_params))
    except AssertionError as err:  # torchdiffeq signals underflow / max steps with asserts
        raise SolverError(f"ODE solver failed: {err}") from err
    return y1
