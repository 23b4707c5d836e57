"""``backend: native``: our Dormand–Prince integrator (:mod:`..runge_kutta`) and adjoint (:mod:`..adjoint`)."""
from .. import runge_kutta
from ..adjoint import Adjoint
from ..errors import SolverError

METHODS = ("dopri5",)


def integrate(func, y0, t0, t1, spec, adjoint_params):
    def solve(f, y, start, end, atol, rtol, layout, quadrature=None):
        norm = runge_kutta.ErrorNorm(layout.groups()) if layout is not None else None
        try:
            return runge_kutta.dopri5(f, y, start, end, atol, rtol, norm, spec.max_num_steps, quadrature=quadrature)
        except SolverError as err:  # name the pass, as the dynamics' own checks do
            if str(err).startswith("ODE solver failed"):
                raise
            phase = getattr(func, "phase", None)
            raise SolverError(f"ODE solver failed{f' in the {phase} pass' if phase else ''}: {err}") from err

    if spec.adjoint:
        return Adjoint.apply(func, solve, True, t0, t1, (spec.atol, spec.rtol),
                             spec.adjoint_tolerances, spec.seminorm, y0, *adjoint_params)
    return solve(func, y0, t0, t1, spec.atol, spec.rtol, None)  # backprop through the solver
