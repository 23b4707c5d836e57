"""One CNF block: integrate the augmented dynamics forward (density) or backward (sampling)."""
import contextlib

import torch
from torch import nn

from .dynamics import AugmentedDynamics
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
        self.odefunc.begin_solve(z)
        state = self.odefunc.pack(z, delta_logp)
        s0, s1 = (1.0, 0.0) if reverse else (0.0, 1.0)
        out = integrate(self.odefunc, state, s0, s1, self.solver, adjoint_params=tuple(self.odefunc.parameters()))
        self.nfe_forward = self._evals_after_forward = self.odefunc.num_evals
        if not torch.isfinite(out).all():
            raise SolverError("ODE solve produced a non-finite state")
        if out.requires_grad and not self.solver.adjoint:
            out.register_hook(self._count_bptt_backward)
        return self.odefunc.unpack(out)

    def _count_bptt_backward(self, grad):
        self._bptt_backward = self.nfe_forward
        return grad


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
def with_divergence(model, divergence):
    """Every CNF block of ``model`` uses the estimator ``divergence`` (a name in
    :data:`~torchprune_flows.cnf.divergence.DIVERGENCES`; ``None``: unchanged) inside the block."""
    blocks = cnf_blocks(model) if divergence is not None else []
    saved = [b.odefunc.divergence for b in blocks]
    for block in blocks:
        block.odefunc.divergence = divergence
    try:
        yield model
    finally:
        for block, saved_divergence in zip(blocks, saved):
            block.odefunc.divergence = saved_divergence


def without_divergence(model):
    """Integrate only the state in every CNF block (sampling needs no log-density, nor probes)."""
    return with_divergence(model, "none")


def set_solver(model, **changes):
    """Change the solver options of every CNF block (e.g. ``adjoint=False`` for Hessians)."""
    for block in cnf_blocks(model):
        block.solver = block.solver.replace(**changes)
