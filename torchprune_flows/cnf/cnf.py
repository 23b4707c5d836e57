"""One CNF block: integrate the augmented dynamics forward (density) or backward (sampling)."""
import contextlib

import torch
from torch import nn

from .backends import BACKENDS
from .dynamics import AugmentedDynamics, SolveSettings
from .solver import SolverError, SolverSpec, integrate


class CNF(nn.Module):
    """A continuous normalizing flow block around a vector field ``f(t, z)``.

    ``forward(z, delta_logp)`` returns ``(z(T), delta_logp + ∫ -div f dt)`` so that
    ``log p(x) = log p(z(T)) - delta_logp``; ``reverse=True`` integrates from T back to 0.
    After each call ``nfe_forward`` holds the function evaluations of the solve, and after the
    backward pass ``nfe_backward`` those of the gradient computation (the adjoint solve; with
    backprop through the solver, the evaluations autograd differentiates through).
    """

    def __init__(self, vector_field, divergence="hutchinson", probe="gaussian", solver=None,
                 end_time=1.0, train_end_time=False):
        super().__init__()
        self.odefunc = AugmentedDynamics(vector_field, divergence, probe, end_time, train_end_time)
        self.solver = solver if solver is not None else SolverSpec()
        self.nfe_forward = 0
        self._evals_after_forward = 0
        self._bptt_backward = 0

    @property
    def vector_field(self):
        return self.odefunc.vector_field

    @property
    def nfe_backward(self):
        if self.solver.adjoint:
            return self.odefunc.num_evals - self._evals_after_forward
        return self._bptt_backward

    def reset_nfe(self):
        self.odefunc.num_evals = 0
        self.nfe_forward = self._evals_after_forward = self._bptt_backward = 0

    def forward(self, z, delta_logp=None, reverse=False):
        if delta_logp is None:
            delta_logp = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        self.reset_nfe()
        state = self.odefunc.pack(z, delta_logp)
        s0, s1 = (1.0, 0.0) if reverse else (0.0, 1.0)
        params = tuple(self.odefunc.parameters())
        end_time = self.odefunc.end_time
        # Adjoint solves see s as a constant (AugmentedDynamics.forward says why); the plain
        # adjoint (on either backend) also T, whose gradient then comes from the boundary term
        # (EndTimeBoundary). Under a seminorm and with fixed steps, no error norm sees dL/dT,
        # which stays a free adjoint parameter. Backprop through
        # the solver keeps both in the graph.
        spec = self.solver
        plain_adjoint = spec.adjoint and not spec.seminorm and not spec.fixed_step
        boundary = plain_adjoint and end_time.requires_grad and torch.is_grad_enabled()
        checks_finite = BACKENDS[spec.resolved_backend].checks_finite
        self.odefunc.begin_solve(z, SolveSettings(constant_time=spec.adjoint, constant_end_time=boundary,
                                                  max_evals=spec.max_evals, check_finite=not checks_finite))
        if boundary:
            params = tuple(p for p in params if p is not self.odefunc.sqrt_end_time)
            if reverse:  # the input sits at time T: dL/dT = -<dL/dy(T), F(T, y(T))>
                state = EndTimeBoundary.apply(state, end_time, self.odefunc, self.odefunc.probe, -1.0)
        out = integrate(self.odefunc, state, s0, s1, self.solver, adjoint_params=params)
        self.nfe_forward = self._evals_after_forward = self.odefunc.num_evals
        self.odefunc.begin_backward()  # the backward solve's budget starts here
        if not torch.isfinite(out).all():
            raise SolverError("ODE solve produced a non-finite state")
        if boundary and not reverse:  # the output sits at time T: dL/dT = <dL/dz(T), F(T, z(T))>
            out = EndTimeBoundary.apply(out, end_time, self.odefunc, self.odefunc.probe, 1.0)
        if out.requires_grad and not self.solver.adjoint:
            out.register_hook(self._count_bptt_backward)
        return self.odefunc.unpack(out)

    def _count_bptt_backward(self, grad):
        self._bptt_backward = self.nfe_forward
        return grad


class EndTimeBoundary(torch.autograd.Function):
    """Identity on a packed state at real time T whose backward adds dL/dT from the boundary term.

    The block integrates d/ds y = T F(sT, y) over s in [0, 1], i.e. dy/dt = F(t, y) over [0, T].
    Moving the end point T of the solve changes the state at it by F(T, y(T)) per unit of T, so
    with T held constant inside the solve, dL/dT = sign * <dL/dy(T), F(T, y(T))> exactly: sign
    +1 where y(T) is the output (density direction), -1 where it is the input (sampling). This
    costs one vector-field evaluation in the backward pass (with the solve's probe), where the
    plain adjoint would otherwise integrate dL/dT over the whole backward solve and let that
    integral's error steer the step size (a seminorm ignores it, so there T stays in the solve).
    ``backward`` is not differentiable again (use backprop through the solver for higher
    derivatives, as the Hessian analysis does).
    """

    @staticmethod
    def forward(ctx, state, end_time, odefunc, probe, sign):
        ctx.odefunc, ctx.probe, ctx.sign = odefunc, probe, sign
        ctx.save_for_backward(state, end_time)
        return state.clone()

    @staticmethod
    def backward(ctx, grad):
        state, end_time = ctx.saved_tensors
        grad_end_time = None
        if ctx.needs_input_grad[1]:
            derivative = ctx.odefunc.real_time_derivative(state, ctx.probe)
            grad_end_time = (ctx.sign * (grad * derivative).sum()).reshape(end_time.shape).to(end_time.dtype)
        return grad, grad_end_time, None, None, None


def cnf_blocks(model):
    return [m for m in model.modules() if isinstance(m, CNF)]


def nfe_counts(model):
    """``{"forward": NFE-F, "backward": NFE-B}`` summed over every CNF block of ``model``."""
    blocks = cnf_blocks(model)
    return {
        "forward": sum(b.nfe_forward for b in blocks),
        "backward": sum(b.nfe_backward for b in blocks),
    }


@contextlib.contextmanager
def _dynamics_setting(model, name, value):
    """Every CNF block's dynamics have ``<name> = value`` inside the block (restored after)."""
    blocks = cnf_blocks(model)
    saved = [getattr(b.odefunc, name) for b in blocks]
    for block in blocks:
        setattr(block.odefunc, name, value)
    try:
        yield model
    finally:
        for block, old in zip(blocks, saved):
            setattr(block.odefunc, name, old)


def with_divergence(model, divergence):
    """Every CNF block of ``model`` uses the estimator ``divergence`` (a name in
    :data:`~torchprune_flows.cnf.divergence.DIVERGENCES`; ``None``: unchanged) inside the block."""
    if divergence is None:
        return contextlib.nullcontext(model)
    return _dynamics_setting(model, "divergence", divergence)


def twice_differentiable(model):
    """Every CNF block of ``model`` evaluates its field on the generic autograd path, whose graph
    can be differentiated twice (Hessian-vector products through backprop through the solver);
    by default fields that offer the one-pass Hutchinson path (:mod:`.affine_hutchinson`) use it,
    and its backward is first-order only."""
    return _dynamics_setting(model, "twice_differentiable", True)


def without_divergence(model):
    """Integrate only the state in every CNF block (sampling needs no log-density, nor probes)."""
    return with_divergence(model, "none")


def set_solver(model, **changes):
    """Change the solver options of every CNF block (e.g. ``adjoint=False`` for Hessians)."""
    for block in cnf_blocks(model):
        block.solver = block.solver.replace(**changes)
