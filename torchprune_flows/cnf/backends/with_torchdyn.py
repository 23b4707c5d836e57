"""``backend: torchdyn``: ``torchdyn.numerics.odeint``, with our adjoint (:mod:`..adjoint`) on it.

Why not torchdyn's own adjoint (``ODEProblem(sensitivity="adjoint")``): torchdyn 1.0.6 hard-codes
the seminorm in it (``numerics/sensitivity.py``, ``seminorm=(True, ...)`` beside a TODO), and it
spends two more field evaluations per solve on the gradient of the time span, which our blocks
never need. Its stage arithmetic is one axpy per stage.
"""
import torch

from ..adjoint import Adjoint

METHODS = ("dopri5", "tsit5", "euler", "midpoint", "rk4")


def _grid(t0, t1, spec, y0):
    """The time points and tolerances for torchdyn: fixed-step methods step on a grid of
    ``step_size`` and ignore tolerances (torchdyn warns unless they are its defaults, 1e-3)."""
    if not spec.fixed_step:
        return torch.tensor([t0, t1], dtype=y0.dtype, device=y0.device), spec.atol, spec.rtol
    n_steps = max(1, int(round(abs(t1 - t0) / spec.step_size)))
    return torch.linspace(t0, t1, n_steps + 1, device=y0.device, dtype=y0.dtype), 1e-3, 1e-3


def integrate(func, y0, t0, t1, spec, adjoint_params):
    def solve(f, y, start, end, atol, rtol, layout):
        t, grid_atol, grid_rtol = _grid(start, end, spec, y)
        if spec.fixed_step:
            atol, rtol = grid_atol, grid_rtol
        seminorm = (layout.seminorm, 2 * layout.n) if layout is not None else (False, None)
        return _solve(f, y, t, spec.method, atol, rtol, seminorm)

    if spec.adjoint:
        return Adjoint.apply(func, solve, False, float(t0), float(t1), (spec.atol, spec.rtol), spec.adjoint_tolerances,
                             spec.seminorm, y0, *adjoint_params)
    return solve(func, y0, float(t0), float(t1), spec.atol, spec.rtol, None)  # backprop through the solver


def _solve(func, y0, t, method, atol, rtol, seminorm=(False, None)):
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
