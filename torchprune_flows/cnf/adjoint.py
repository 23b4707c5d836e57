"""The adjoint method over any integrator: our Dormand–Prince (``native``) or torchdyn's.

The backward solve integrates the state ``y``, its adjoint ``a = dL/dy`` and the parameters'
adjoint ``mu`` from t1 back to t0 with ``dy/dt = f``, ``da/dt = -a df/dy``, ``dmu/dt = -a
df/dtheta`` (``a(t1) = dL/dy(t1)``, ``mu(t1) = 0``), so that ``a(t0) = dL/dy0`` and ``mu(t0) =
dL/dtheta``. Every backward evaluation is one the solver asked for, and the dynamics' own
:meth:`~torchprune_flows.cnf.dynamics.AugmentedDynamics.vjp` (one forward and one hand-written
backward pass where the field is an affine stack) replaces autograd's double pass where it can.
No gradient of the time span is computed: our blocks integrate over the constant [0, 1] and keep
their end time T as a parameter of the field.
"""
from typing import NamedTuple, Tuple

import torch


class AdjointLayout(NamedTuple):
    """The flat backward state ``[y (n), a (n), mu (sizes...)]`` and which entries steer the steps:
    the state and its adjoint under the seminorm (Kidger et al. 2021), every part otherwise."""

    n: int
    sizes: Tuple[int, ...]
    seminorm: bool

    def groups(self):
        """``[start, stop)`` ranges whose RMS norms' maximum is the error norm (torchdiffeq's
        mixed norm: one group per part of the state)."""
        groups = [(0, self.n), (self.n, 2 * self.n)]
        if not self.seminorm:
            start = 2 * self.n
            for size in self.sizes:
                groups.append((start, start + size))
                start += size
        return groups


def vjp(func, t, y, cotangent, params):
    """``(f, c^T df/dy, [c^T df/dp])``: the dynamics' own vjp where it offers one, else autograd."""
    direct = getattr(func, "vjp", None)
    if direct is not None:
        out = direct(t, y, cotangent, params)
        if out is not None:
            return out
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        f = func(t, y)
        grads = torch.autograd.grad(f, (y, *params), cotangent, allow_unused=True)
    return f.detach(), grads[0], grads[1:]


class Adjoint(torch.autograd.Function):
    """``y(t1)`` of ``dy/dt = func(t, y)`` by ``solve``, differentiated by the adjoint method.

    ``solve(func, y0, t0, t1, atol, rtol, layout) -> y(t1)`` is a backend's integrator; ``layout``
    is None for the forward solve and an :class:`AdjointLayout` for the backward one.
    ``takes_quadrature``: whether ``solve`` also accepts ``quadrature=`` (``runge_kutta.dopri5``'s);
    then, under the seminorm, the parameters' adjoint is integrated as a quadrature beside ``[y,
    a]``: the state's steps are the same, and the parameter gradients are evaluated only at the
    stages whose weight is nonzero and kept out of the stage arithmetic.
    """

    @staticmethod
    def forward(ctx, func, solve, takes_quadrature, t0, t1, tolerances, adjoint_tolerances, seminorm, y0, *params):
        y1 = solve(func, y0, t0, t1, *tolerances, None)
        ctx.func, ctx.solve, ctx.span, ctx.params = func, solve, (t0, t1), params
        ctx.quadrature = takes_quadrature and seminorm
        ctx.adjoint_tolerances, ctx.seminorm = adjoint_tolerances, seminorm
        ctx.save_for_backward(y1)
        return y1

    @staticmethod
    def backward(ctx, grad_y1):
        (y1,) = ctx.saved_tensors
        func, params = ctx.func, ctx.params
        n = y1.numel()
        sizes = tuple(p.numel() for p in params)
        t0, t1 = ctx.span
        layout = AdjointLayout(n, sizes, ctx.seminorm)

        def state_and_adjoint(t, state, with_params):
            y = state[:n].view_as(y1)
            f, grad_y, grads = vjp(func, t, y, -state[n:2 * n].view_as(y1), params if with_params else ())
            parts = [f.reshape(-1), grad_y.reshape(-1) if grad_y is not None else y1.new_zeros(n)]
            return parts, [g if g is not None else p.new_zeros(p.shape) for g, p in zip(grads, params)]

        start = [y1.detach().reshape(-1), grad_y1.reshape(-1)]
        if ctx.quadrature:
            def dynamics(t, state, with_params):
                parts, grads = state_and_adjoint(t, state, with_params)
                return torch.cat(parts), (grads if with_params else None)

            final, grad_params = ctx.solve(dynamics, torch.cat(start), t1, t0, *ctx.adjoint_tolerances, layout,
                                           quadrature=params)
        else:
            def dynamics(t, state):
                parts, grads = state_and_adjoint(t, state, True)
                return torch.cat(parts + [g.reshape(-1) for g in grads])

            state = torch.cat(start + [y1.new_zeros(sum(sizes))])
            final = ctx.solve(dynamics, state, t1, t0, *ctx.adjoint_tolerances, layout)
            grad_params = [g.view_as(p) for g, p in zip(torch.split(final[2 * n:], sizes), params)]
        return (None, None, None, None, None, None, None, None, final[n:2 * n].view_as(y1), *grad_params)
