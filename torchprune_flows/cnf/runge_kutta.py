"""Our own Dormand–Prince 5(4) integrator: torchdiffeq's step control with lean stage arithmetic.

The controller is torchdiffeq's dopri5 with the solve landing on its end time (Hairer's initial
step, error ratio ``norm(err / (atol + rtol max(|y0|, |y1|)))`` with the RMS norm per group of
entries and the largest group deciding, step factor ``min(10, max(0.9 ratio^(-1/5), 0.2))``, no
shrinking after an accepted step), so it takes the same steps to rounding. What differs is the
cost per step: the controller runs on Python floats (one synchronisation per step), and without
autograd the stages live in one preallocated (7, n) buffer, each stage's input being one
matrix-vector product over it. Under autograd (backprop through the solver) the stages are
combined out of place so the graph is kept; step sizes are then constants of the graph.
"""
import math

import torch

from .errors import SolverError

#: Dormand & Prince (1980): nodes, the stage rows (the seventh is the 5th-order solution, so the
#: seventh evaluation is the next step's first: "first same as last") and the error weights
#: (5th- minus 4th-order solution)
NODES = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
STAGES = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
ERROR = (35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
         -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60)
ORDER = 5
SAFETY, MAX_GROWTH, MAX_SHRINK = 0.9, 10.0, 0.2


def _coefficients(dtype, device):
    """(7, 7): rows 0-5 the stage inputs of evaluations 2-7, row 6 the error estimate."""
    rows = [list(row) + [0.0] * (7 - len(row)) for row in STAGES] + [list(ERROR)]
    return torch.tensor(rows, dtype=dtype, device=device)


class ErrorNorm:
    """``norm(x)`` = the largest RMS over groups of entries ``[start, stop)`` of a flat tensor.

    One group over everything is torchdiffeq's RMS norm; the adjoint's seminorm is the state
    and its adjoint (two groups, the parameters' integrals left out); the plain adjoint adds one
    group per parameter, as torchdiffeq's mixed norm over its tuple state does.
    """

    def __init__(self, groups):
        self.groups = list(groups)

    def __call__(self, x):
        squares = x.square()
        if len(self.groups) == 1:
            start, stop = self.groups[0]
            return math.sqrt(squares[start:stop].mean().item())
        means = torch.stack([squares[start:stop].mean() for start, stop in self.groups])
        return math.sqrt(means.max().item())


def whole(n):
    return ErrorNorm([(0, n)])


def _time(value, like):
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _initial_step(func, t0, direction, y0, f0, atol, rtol, norm):
    """Hairer, Norsett & Wanner, Solving ODEs I, II.4 (as torchdiffeq's ``_select_initial_step``)."""
    scale = y0.abs().mul_(rtol).add_(atol)
    d0, d1 = norm(y0 / scale), norm(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = func(t0 + direction * h0, y0 + (direction * h0) * f0)
    d2 = norm((f1 - f0) / scale) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / ORDER)
    return min(100 * h0, h1)


def _next_step(step, ratio):
    if ratio == 0:
        return step * MAX_GROWTH
    shrink = 1.0 if ratio < 1 else MAX_SHRINK
    return step * min(MAX_GROWTH, max(SAFETY / ratio ** (1.0 / ORDER), shrink))


def dopri5(func, y0, t0, t1, atol, rtol, norm=None, max_num_steps=2 ** 31 - 1, quadrature=None):
    """The state at ``t1`` of ``dy/dt = func(t, y)``, ``y(t0) = y0`` (``t1 < t0`` integrates
    backwards); ``func`` gets a 0-d time tensor of ``y0``'s dtype. ``norm``: an :class:`ErrorNorm`
    over ``y0.reshape(-1)`` (default: one RMS over everything). Raises :class:`SolverError` on step
    size underflow, non-finite values or more than ``max_num_steps`` steps.

    ``quadrature``: tensors shaped like integrands ``q(t, y)`` to integrate beside the state; then
    ``func(t, y, integrand)`` returns ``(dy/dt, [q...] if integrand else None)`` and the result is
    ``(y(t1), [integral of q from t0 to t1])`` (see :class:`_Quadrature`)."""
    t0, t1 = float(t0), float(t1)
    shape, flat0 = y0.shape, y0.reshape(-1)
    norm = norm or whole(flat0.numel())
    direction = 1.0 if t1 >= t0 else -1.0
    length = abs(t1 - t0)
    integrals = _Quadrature(func, quadrature) if quadrature is not None else None

    def field(time, flat, stage=None):
        if integrals is not None:
            return integrals.evaluate(_time(time, flat), flat.view(shape), stage).reshape(-1)
        return func(_time(time, flat), flat.view(shape)).reshape(-1)

    f0 = field(t0, flat0, 0)
    step = _initial_step(field, t0, direction, flat0, f0, atol, rtol, norm)
    if not math.isfinite(step):
        raise SolverError("non-finite values in the state or its derivative")
    combine = _StagesInPlace(flat0, f0) if not torch.is_grad_enabled() else _StagesInGraph(f0)
    done, y, steps = 0.0, flat0, 0
    while done < length:
        if steps >= max_num_steps:
            raise SolverError(f"max_num_steps exceeded ({steps}>={max_num_steps})")
        landing = done + step >= length
        h = length - done if landing else step
        if not done + h > done:
            raise SolverError(f"underflow in dt {h}")
        if integrals is not None:
            integrals.begin_step(last=landing)
        y1, error = combine.step(field, y, t0 + direction * done, direction * h)
        with torch.no_grad():
            ratio = norm(error / y.abs().maximum(y1.abs()).mul_(rtol).add_(atol))
        if not math.isfinite(ratio):
            raise SolverError("non-finite values in the state")
        steps += 1
        if ratio <= 1:
            done, y = (length if landing else done + h), y1
            combine.accept()
            if integrals is not None:
                integrals.accept(direction * h)
        step = _next_step(h, ratio)
    return y.view(shape) if integrals is None else (y.view(shape), integrals.total)


class _Quadrature:
    """Integrals of ``q(t, y)`` along the solution by the 5th-order solution's weights ``b``.

    Nothing depends on them, so they need no stage inputs and take no part in the step control
    (as the parameters' adjoint under the seminorm): ``q`` is evaluated only at the stages whose
    weight is nonzero (``b_2 = 0``), at the last stage only when it is the next step's first (not
    on the final step), never in the initial step-size probe, and each accepted step adds
    ``h * sum(b_i q_i)``.
    """

    WEIGHTS = STAGES[5] + (0.0,)

    def __init__(self, func, like):
        self.func = func
        self.total = [torch.zeros_like(x) for x in like]
        self.first, self.next_first, self.step_sum = None, None, None
        self.last_step = False

    def begin_step(self, last):
        """Called before every step attempt: its sum restarts from the first stage, and on the
        final step (``last``) the seventh stage, which no next step reuses, skips ``q``."""
        self.last_step = last
        self.step_sum = [x * self.WEIGHTS[0] for x in self.first]

    def evaluate(self, t, y, stage):
        wanted = stage is not None and (self.WEIGHTS[stage] != 0 or (stage == 6 and not self.last_step))
        dy, q = self.func(t, y, wanted)
        if stage == 0:
            self.first = q
        elif stage == 6:
            self.next_first = q
        elif wanted:
            for total, x in zip(self.step_sum, q):
                total.add_(x, alpha=self.WEIGHTS[stage])
        return dy

    def accept(self, h):
        for total, x in zip(self.total, self.step_sum):
            total.add_(x, alpha=h)
        self.first = self.next_first


class _StagesInPlace:
    """Stages in one (7, n) buffer: every stage input is ``y0 + K[:i]^T (h a_i)`` (one addmv)."""

    def __init__(self, y0, f0):
        self.k = y0.new_empty(7, y0.numel())
        self.k[0] = f0
        self.table = _coefficients(y0.dtype, y0.device)

    def step(self, field, y0, t0, h):
        scaled = self.table * h
        for i in range(6):
            stage_input = torch.addmv(y0, self.k[:i + 1].t(), scaled[i, :i + 1])
            self.k[i + 1] = field(t0 + NODES[i + 1] * h, stage_input, i + 1)
        return stage_input, torch.mv(self.k.t(), scaled[6])

    def accept(self):
        self.k[0] = self.k[6]


class _StagesInGraph:
    """Stages as separate tensors combined out of place, so autograd records the whole solve."""

    def __init__(self, f0):
        self.f0 = f0
        self.last = None

    def step(self, field, y0, t0, h):
        k = [self.f0]
        for i, row in enumerate(STAGES):
            stage_input = y0
            for coefficient, k_j in zip(row, k):
                if coefficient:
                    stage_input = torch.add(stage_input, k_j, alpha=coefficient * h)
            k.append(field(t0 + NODES[i + 1] * h, stage_input, i + 1))
        with torch.no_grad():
            error = sum(k_j * (c * h) for c, k_j in zip(ERROR, k) if c)
        self.last = k[6]
        return stage_input, error

    def accept(self):
        self.f0 = self.last
