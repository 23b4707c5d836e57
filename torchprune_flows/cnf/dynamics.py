"""The augmented dynamics of a CNF: the state and the change of its log-density."""
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .affine_hutchinson import field_and_hutchinson, field_hutchinson_and_vjp, with_tensors
from .divergence import DIVERGENCES, sample_probe
from .errors import SolverError


@dataclass(frozen=True)
class SolveSettings:
    """What the CNF block tells its dynamics about one solve (see :meth:`AugmentedDynamics.forward`).

    ``constant_time``: the time s is a constant of the field (adjoint solves); ``constant_end_time``:
    so is T (the plain adjoint, which adds dL/dT from the boundary term); ``max_evals``: the
    evaluations one solve (forward or backward) may take before it is stopped as runaway
    (:attr:`~torchprune_flows.cnf.solver.SolverSpec.max_evals`; None: no limit);
    ``check_finite``: every evaluation checks its state for NaN/inf (off where the solver checks
    each step itself: our dopri5's error ratio is then non-finite).
    """

    constant_time: bool = False
    constant_end_time: bool = False
    max_evals: Optional[int] = None
    check_finite: bool = True


class AugmentedDynamics(nn.Module):
    """d/ds [z, delta_logp] = T * [f(s T, z), -div f(s T, z)] for s in [0, 1].

    Integrating over s in [0, 1] with the vector field scaled by the end time T makes T an
    ordinary parameter (``sqrt_end_time``, T = sqrt_end_time^2) for every solver and backend.
    The state travels packed as one tensor ``[z.flatten(1), delta_logp]`` of shape (B, n + 1).
    ``num_evals`` counts calls of the vector field; the probe is fixed for the whole solve.
    ``divergence="none"`` integrates the state alone (a neural ODE that is not a density).

    The :class:`SolveSettings` the CNF block hands :meth:`begin_solve` can make the time s, and
    the end time T, constants of the vector field. Adjoint solves need no dL/ds, and
    the plain adjoint gets dL/dT from the boundary term instead of the solve (see
    :class:`torchprune_flows.cnf.cnf.EndTimeBoundary`). Backprop through the solver keeps both
    in the graph: torchdiffeq's adaptive step sizes (and so the stage times s) depend on the state
    there, and the gradient of the discrete solve is only consistent when the field sees those
    stage times live (detaching them there put the gradients 1e-3 off).
    """

    def __init__(self, vector_field, divergence="hutchinson", probe="gaussian", end_time=1.0,
                 train_end_time=False):
        super().__init__()
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence '{divergence}'; choose from {', '.join(DIVERGENCES)}")
        self.vector_field = vector_field
        self.divergence = divergence
        self.probe_kind = probe
        sqrt_t = torch.tensor(math.sqrt(end_time))
        if train_end_time:
            self.sqrt_end_time = nn.Parameter(sqrt_t)
        else:
            self.register_buffer("sqrt_end_time", sqrt_t)
        self.num_evals = 0
        self.state_shape = None
        self.probe = None
        self.settings = SolveSettings()
        # Fields that offer ``as_affine_stack`` take the one-pass Hutchinson path
        # (affine_hutchinson.py), whose backward is first-order only, unless a caller needs second
        # derivatives (``cnf.twice_differentiable``)
        self.twice_differentiable = False
        # which solve of a block's pass is running, and the evaluation count it started at: the
        # budget (settings.max_evals) stops a runaway solve on every backend, torchdyn included
        self.phase_start = 0
        self.phase = "forward"
        self._stacks = {}  # this solve's affine stacks (see _affine_stack), by grad mode
        self._stack_sources = None

    def __getstate__(self):
        # a cached stack may hold autograd graphs, which neither deepcopy nor pickle takes
        state = dict(super().__getstate__())
        state["_stacks"], state["_stack_sources"] = {}, None
        return state

    def _check(self, state):
        """Raise :class:`SolverError` on a non-finite state or a solve over its evaluation budget."""
        max_evals = self.settings.max_evals
        if max_evals is not None and self.num_evals - self.phase_start > max_evals:
            raise SolverError(f"ODE solver failed in the {self.phase} pass: more than {max_evals} "
                              "vector-field evaluations in one solve (max_num_steps exceeded; the dynamics are "
                              "too stiff or diverging)")
        if self.settings.check_finite and not torch.isfinite(state).all():
            raise SolverError(f"ODE solver failed in the {self.phase} pass: non-finite values in the state")

    @property
    def end_time(self):
        return self.sqrt_end_time * self.sqrt_end_time

    def begin_solve(self, z, settings=None):
        """Fix the shape of z, the Hutchinson probe and the :class:`SolveSettings` for the coming
        solve (and the backward solve of its adjoint: :meth:`begin_backward`)."""
        self.settings = settings or SolveSettings()
        self.phase_start, self.phase = self.num_evals, "forward"
        self.state_shape = z.shape[1:]
        self.probe = sample_probe(z, self.probe_kind) if DIVERGENCES[self.divergence].uses_probe else None
        self._stacks = {}
        self._stack_sources = list(self.vector_field.parameters()) + list(self.vector_field.buffers())

    def begin_backward(self):
        """The forward solve is done: the evaluations from here on are the backward solve's."""
        self.phase_start, self.phase = self.num_evals, "backward (adjoint)"

    def pack(self, z, delta_logp):
        return torch.cat([z.reshape(z.shape[0], -1), delta_logp.reshape(-1, 1)], dim=1)

    def unpack(self, state):
        return state[:, :-1].reshape(state.shape[0], *self.state_shape), state[:, -1]

    def _affine_stack(self, time, state, create_graph):
        """The field as an affine stack when the one-pass path applies (Hutchinson, or the field
        alone), else None. A field whose stack does not depend on time (``constant_affine_stack``)
        builds it once per solve and grad mode: it is the same at every evaluation."""
        as_stack = getattr(self.vector_field, "as_affine_stack", None)
        if (as_stack is None or self.divergence not in ("hutchinson", "none") or len(self.state_shape) != 1
                or (create_graph and self.twice_differentiable)):
            return None
        if not getattr(self.vector_field, "constant_affine_stack", False):
            return as_stack(time, state)
        # a parameter or buffer changed in place (an optimizer step) means a new stack; begin_solve
        # lists them (listing a module's tensors at every evaluation cost more than the stack)
        if self._stack_sources is None:
            self._stack_sources = list(self.vector_field.parameters()) + list(self.vector_field.buffers())
        key = (torch.is_grad_enabled(), tuple(t._version for t in self._stack_sources))
        if key not in self._stacks:
            self._stacks.clear()
            self._stacks[key] = as_stack(time, state)
        return self._stacks[key]

    def _field_and_divergence(self, time, state, probe, create_graph):
        """``f(time, z)`` and ``div f`` at the packed ``state`` (real time, not scaled by T)."""
        # each path unpacks in its own grad mode: a view of a tensor that requires grad, taken
        # under no_grad, still claims to require grad but has no graph
        with torch.set_grad_enabled(create_graph):
            stack = self._affine_stack(time, state, create_graph)
            if stack is not None:
                f, div = field_and_hutchinson(*stack, self.unpack(state)[0], probe)
                return f, (div if div is not None else f.new_zeros(f.shape[0]))
            if self.divergence == "none":  # the field alone: no graph unless the caller needs one
                return self.vector_field(time, self.unpack(state)[0]), state.new_zeros(state.shape[0])
        with torch.enable_grad():
            z, _ = self.unpack(state)
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.vector_field(time, z)
            div = DIVERGENCES[self.divergence].function(f, z, create_graph, probe=probe)
        return f, div

    def forward(self, t, x):
        # (t, x) are the names torchdyn looks for; t is the rescaled time s, x the packed state.
        #
        # Why s is a constant in adjoint solves (the cause of our former backward-NFE excess over
        # FFJORD's on identical weights: 44 (seminorm) / 56 (plain adjoint) against 32 on the
        # narrow MINIBOONE-shaped net ffjord_l2_hm2_f1_softplus and 1,000 real rows): torchdiffeq's
        # adjoint (0.2.5) always hands the vector field a time that requires grad (``t_ =
        # t.detach(); t = t_.requires_grad_(True)`` works in place) and integrates dL/dt as the
        # first component of the adjoint state; that component enters its step-size error norm
        # (``max(t.abs(), ...)``) even under the seminorm. With a time-dependent field
        # (concatsquash, concat convs) the live s made that integral non-zero, so the backward
        # solve took extra steps to resolve a time gradient nobody uses (the end points 0 and 1
        # are constants; FFJORD's ODE function cuts t from the graph the same way). Gradients
        # w.r.t. the state and the parameters do not depend on it.
        # T is held constant in plain-adjoint solves: there dL/dT, integrated as one more adjoint
        # parameter, dominated the parameters' error norm (56 -> 33 backward evaluations once it
        # left the solve); the CNF block adds dL/dT from the boundary term instead. Under the
        # seminorm the parameters' integrals are outside the error norm, so T stays in the solve.
        s = t.detach() if self.settings.constant_time and torch.is_tensor(t) else t
        self.num_evals += 1
        self._check(x)
        create_graph = torch.is_grad_enabled()
        end_time = self.end_time.detach() if self.settings.constant_end_time else self.end_time
        f, div = self._field_and_divergence(s * end_time, x, self.probe, create_graph)
        dz = f * end_time
        d_logp = -div * end_time
        out = torch.cat([dz.reshape(dz.shape[0], -1), d_logp.reshape(-1, 1)], dim=1)
        return out if create_graph else out.detach()

    def vjp(self, t, state, cotangent, params):
        """``(F, c^T dF/dstate, [c^T dF/dp for p in params])`` at the packed ``state`` for the
        cotangent ``c``, in one forward and one hand-written backward pass over the batch where the
        field is an affine stack (:mod:`.affine_hutchinson`); None otherwise, and the adjoint then
        asks autograd. Only parameter-sized work (masks, gates, shifts, T) goes through autograd."""
        s = t.detach() if self.settings.constant_time and torch.is_tensor(t) else t
        with torch.enable_grad():
            end_time = self.end_time.detach() if self.settings.constant_end_time else self.end_time
            stack = self._affine_stack(s * end_time, state, create_graph=False)
        if stack is None:
            return None
        self.num_evals += 1
        self._check(state)
        layers, activations = stack
        flat = [tensor for layer in layers for tensor in layer]
        # no params asked for (a stage whose parameter adjoint is not integrated): no weight products
        needs = [bool(params) and tensor is not None and tensor.requires_grad for tensor in flat]
        constant = [with_tensors(layer, *(x.detach() if x is not None else None for x in layer)) for layer in layers]
        scale = end_time.detach()
        c_z, c_logp = cotangent[:, :-1], cotangent[:, -1]
        f, div, grad_z, grads = field_hutchinson_and_vjp(constant, activations, self.unpack(state)[0], self.probe,
                                                         c_z * scale, c_logp * -scale, needs)
        if div is None:
            div = f.new_zeros(f.shape[0])
        out = torch.cat([(f * scale), (div * -scale).unsqueeze(1)], dim=1)
        grad_state = torch.cat([grad_z, grad_z.new_zeros(grad_z.shape[0], 1)], dim=1)
        # a stack tensor that is a parameter itself takes its gradient as it is; the others (masked
        # weights, gates, shifts, T) through autograd over their parameter-sized graph
        position = {id(p): i for i, p in enumerate(params)}
        param_grads = [None] * len(params)
        outputs, grad_outputs = [], []
        for tensor, grad in zip(flat, grads):
            if grad is None:
                continue
            if id(tensor) in position:
                i = position[id(tensor)]
                param_grads[i] = grad if param_grads[i] is None else param_grads[i] + grad
            else:
                outputs.append(tensor)
                grad_outputs.append(grad)
        if end_time.requires_grad and params:  # T scales the whole field: d<c, F>/dT = <c_z, f> - <c_logp, div>
            outputs.append(end_time)
            grad_outputs.append(((c_z * f).sum() - (c_logp * div).sum()).reshape(end_time.shape))
        if outputs:
            through_graph = torch.autograd.grad(outputs, params, grad_outputs, allow_unused=True, retain_graph=True)
            param_grads = [g if h is None else (h if g is None else g + h) for g, h in zip(param_grads, through_graph)]
        return out, grad_state, param_grads

    def real_time_derivative(self, state, probe):
        """d/dt [z, delta_logp] = [f(T, z), -div f(T, z)] at the packed ``state`` at real time T,
        without a graph (one vector-field evaluation, counted in ``num_evals``)."""
        self.num_evals += 1
        end_time = self.end_time.detach()
        f, div = self._field_and_divergence(end_time, state.detach(), probe, create_graph=False)
        return torch.cat([f.detach().reshape(f.shape[0], -1), -div.detach().reshape(-1, 1)], dim=1)
