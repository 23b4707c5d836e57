"""Hessian of a training loss with respect to the parameters that pruning kept.

Everything here works with Hessian-vector products (HVPs) of a scalar loss evaluated once on a
fixed data subset: :class:`HessianOperator` computes the gradient with ``create_graph=True``
and differentiates it again for every HVP (one backward pass each, the graph is retained).

**Solver.** For a CNF the HVP is a double backward pass *through the ODE solver*. The adjoint
method gives first derivatives only (its backward pass is a second ODE solve, not a
differentiable graph), so switch every CNF block to backprop through the solver first::

    from torchprune_flows.cnf.cnf import set_solver
    set_solver(net, adjoint=False)

**Coordinates.** The Hessian is taken with respect to every trainable parameter of the net
(``requires_grad``); of a pruned tensor (``torch.nn.utils.prune``: parameter ``<name>_orig`` and
buffer ``<name>_mask``) only the entries whose mask is 1. Pruned coordinates are excluded: the
operator's dimension counts kept entries only, vectors are zero at pruned entries and no estimate
ever sees them. A fully pruned layer therefore contributes nothing. :class:`KeptParameters`
maps between the flat vector of kept coordinates and the parameter tensors.

**Determinism.** The loss is evaluated once, right after seeding the global torch RNG with the
operator's seed (inside :func:`torch.random.fork_rng`, so the caller's RNG state is restored
afterwards); Hutchinson probes that a flow draws with ``torch.randn_like`` at the start of each
solve are thereby fixed, and they stay fixed for all HVPs because the graph is reused. Every
random vector of the estimators comes from a ``torch.Generator`` seeded with the estimator's
``seed``: on CPU the same seeds give bitwise identical numbers.

**Estimators.** :func:`lambda_max` (Lanczos), :func:`hutchinson_trace` (Rademacher probes),
:func:`slq_spectrum` (stochastic Lanczos quadrature) and :func:`condition_number` (largest over
smallest positive SLQ Ritz value). Lanczos runs in float64 with full reorthogonalisation; the
HVPs themselves run in the parameters' dtype (use a float64 net for high accuracy).
"""
import math
from typing import List, NamedTuple

import torch

from ..cnf.cnf import twice_differentiable

#: Precision of the Lanczos vectors, tridiagonal matrices and all estimates.
DTYPE = torch.float64
#: Lanczos stops (invariant subspace found) when the next off-diagonal falls below this times the
#: largest |alpha| + beta seen so far.
BREAKDOWN_RTOL = 1e-12


def positive_threshold(dtype):
    """Relative threshold above which a Ritz value counts as positive in :func:`condition_number`.

    A Ritz value ``theta`` is positive when ``theta > rtol * theta_max`` (``theta_max`` the largest
    Ritz value over all probes) with ``rtol = 1e-8`` for float64 HVPs and ``1e-5`` for float32 or
    lower precision, where the HVPs' rounding noise (about ``1e-7 * lambda_max`` and more after an
    ODE solve) would otherwise turn directions of zero curvature into tiny "positive" eigenvalues.
    """
    return 1e-8 if dtype == torch.float64 else 1e-5


# -- coordinates ----------------------------------------------------------------------------------
class KeptParameters:
    """The trainable entries of ``net`` that pruning kept, as one flat vector.

    ``names[i]`` is the tensor's name as the network uses it (``layer.weight``, not
    ``layer.weight_orig``), ``params[i]`` the trainable parameter (``weight_orig`` for a pruned
    tensor), ``indices[i]`` the flat indices of its kept entries (``None``: all entries) and
    ``sizes[i]`` their number. The masks are read once, at construction.
    """

    def __init__(self, net):
        self.names, self.params, self.indices, self.sizes = [], [], [], []
        seen = set()
        for module_name, module in net.named_modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                base, index = name, None
                if name.endswith("_orig") and hasattr(module, name[:-5] + "_mask"):
                    base = name[:-5]
                    mask = getattr(module, base + "_mask")
                    index = torch.nonzero(mask.detach().reshape(-1) != 0).flatten().to(param.device)
                self.names.append(f"{module_name}.{base}" if module_name else base)
                self.params.append(param)
                self.indices.append(index)
                self.sizes.append(param.numel() if index is None else int(index.numel()))
        self.dim = sum(self.sizes)

    @property
    def device(self):
        return self.params[0].device if self.params else torch.device("cpu")

    @property
    def dtype(self):
        return self.params[0].dtype if self.params else torch.get_default_dtype()

    def slices(self):
        """``{name: slice}`` of every tensor's kept coordinates in the flat vector."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = slice(start, start + size)
            start += size
        return out

    def gather(self, tensors):
        """Flat vector of the kept entries of ``tensors`` (aligned with ``params``; None = zeros)."""
        parts = []
        for tensor, param, index, size in zip(tensors, self.params, self.indices, self.sizes):
            if tensor is None:
                parts.append(torch.zeros(size, dtype=param.dtype, device=param.device))
            else:
                flat = tensor.reshape(-1)
                parts.append(flat if index is None else flat.index_select(0, index))
        if not parts:
            return torch.zeros(0)
        return torch.cat(parts)

    def scatter(self, vector):
        """Tensors shaped like ``params`` (in their dtype) holding ``vector``; zero at pruned entries."""
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of {self.dim} kept coordinates, got shape {tuple(vector.shape)}")
        out = []
        for part, param, index in zip(torch.split(vector, self.sizes), self.params, self.indices):
            part = part.to(dtype=param.dtype, device=param.device)
            if index is None:
                out.append(part.reshape(param.shape))
            else:
                full = torch.zeros(param.numel(), dtype=param.dtype, device=param.device)
                out.append(full.index_copy_(0, index, part).reshape(param.shape))
        return out

    def values(self):
        """The kept entries' current values as one flat vector."""
        return self.gather([p.detach() for p in self.params])


# -- the operator ---------------------------------------------------------------------------------
class HessianOperator:
    """``v -> H v`` for the Hessian of ``loss_closure()`` w.r.t. the kept parameters of ``net``.

    ``loss_closure()`` must return the scalar loss on a fixed data subset. It is called once,
    with the global torch RNG seeded by ``seed`` (so probes drawn inside a flow are fixed); the
    gradient is built with ``create_graph=True`` and each :meth:`matvec` is one backward pass of
    that retained graph. CNF blocks must integrate with backprop through the solver
    (``set_solver(net, adjoint=False)``); the adjoint method has no second derivatives.
    Vectors are float64 tensors of length :attr:`dim` (the number of kept coordinates).
    """

    def __init__(self, net, loss_closure, seed=0):
        self.kept = KeptParameters(net)
        if self.kept.dim == 0:
            raise ValueError("the network has no kept trainable parameters: nothing to differentiate")
        self.seed = seed
        devices = sorted({p.device.index or 0 for p in self.kept.params if p.device.type == "cuda"})
        # the generic field evaluation: its graph can be differentiated twice
        with torch.random.fork_rng(devices=devices), twice_differentiable(net):
            torch.manual_seed(seed)
            loss = loss_closure()
        if not torch.is_tensor(loss) or loss.numel() != 1:
            raise ValueError("loss_closure() must return a scalar tensor")
        if not loss.requires_grad:
            raise ValueError("the loss does not depend on the network's parameters (evaluated under no_grad?)")
        loss = loss.reshape(())
        grads = torch.autograd.grad(loss, self.kept.params, create_graph=True, allow_unused=True)
        self.loss = float(loss.detach())
        self.gradient = self.kept.gather([None if g is None else g.detach() for g in grads]).to(DTYPE)
        # gradients that are constant in the parameters have zero second derivatives: left out
        self._graph = [(i, g) for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self.num_hvp = 0

    @property
    def dim(self):
        return self.kept.dim

    @property
    def device(self):
        return self.kept.device

    @property
    def dtype(self):
        """The dtype of the HVPs (the parameters' dtype)."""
        return self.kept.dtype

    def matvec(self, vector):
        """``H v`` (float64, kept coordinates) for a vector of kept coordinates."""
        vector = torch.as_tensor(vector, dtype=DTYPE, device=self.device)
        self.num_hvp += 1
        if not self._graph:
            return torch.zeros(self.dim, dtype=DTYPE, device=self.device)
        pieces = self.kept.scatter(vector)
        products = torch.autograd.grad(
            [g for _, g in self._graph], self.kept.params, grad_outputs=[pieces[i] for i, _ in self._graph],
            retain_graph=True, allow_unused=True)
        return self.kept.gather(products).to(DTYPE)

    __matmul__ = matvec

    def release(self):
        """Free the retained graph (the operator cannot be used afterwards)."""
        self._graph = None


def dense_hessian(op):
    """The Hessian as a dense float64 matrix, column by column (``dim`` HVPs; small models only)."""
    eye = torch.eye(op.dim, dtype=DTYPE, device=op.device)
    return torch.stack([op.matvec(eye[i]) for i in range(op.dim)], dim=1)


# -- random vectors -------------------------------------------------------------------------------
def _generator(seed):
    return torch.Generator().manual_seed(int(seed))


def rademacher(dim, generator):
    """One Rademacher vector (entries +-1, float64, CPU): ``randint(0, 2, (dim,)) * 2 - 1``."""
    return torch.randint(0, 2, (dim,), generator=generator, dtype=DTYPE, device="cpu") * 2 - 1


# -- Lanczos --------------------------------------------------------------------------------------
def _lanczos(op, start, steps, stop=None):
    """Lanczos tridiagonalisation of ``op`` from ``start`` with full reorthogonalisation.

    At most ``min(steps, dim)`` HVPs; ends early on breakdown (the Krylov space is invariant) or
    when ``stop(alphas, betas, beta)`` is true (``beta``: the next off-diagonal). Returns the diagonal
    ``alphas`` (k,) and the off-diagonal ``betas`` (k - 1,) as float64 CPU tensors.
    """
    steps = max(1, min(int(steps), op.dim))
    basis = torch.zeros(steps, op.dim, dtype=DTYPE, device=op.device)
    q = start.to(dtype=DTYPE, device=op.device)
    q = q / q.norm()
    alphas, betas, scale = [], [], 0.0
    for k in range(steps):
        basis[k] = q
        w = op.matvec(q)
        alpha = torch.dot(q, w)
        w = w - alpha * q
        if k > 0:
            w = w - betas[-1] * basis[k - 1]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - basis[:k + 1].T @ (basis[:k + 1] @ w)
        beta = float(w.norm())
        alphas.append(float(alpha))
        scale = max(scale, abs(float(alpha)) + beta)
        if k + 1 == steps or beta <= BREAKDOWN_RTOL * scale or (stop is not None and stop(alphas, betas, beta)):
            break
        betas.append(beta)
        q = w / beta
    return torch.tensor(alphas, dtype=DTYPE, device="cpu"), torch.tensor(betas, dtype=DTYPE, device="cpu")


def _tridiagonal(alphas, betas):
    return torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)


def lambda_max(op, iters=100, tol=1e-4, seed=0):
    """The largest (algebraic) eigenvalue of the Hessian by the Lanczos method.

    Lanczos (full reorthogonalisation) from a Gaussian start vector drawn from a generator seeded
    with ``seed``, for at most ``min(iters, dim)`` HVPs; it stops once the top Ritz pair's
    residual ``||H y - theta y|| = beta_k |s_k|`` is at most ``tol * |theta|``. With ``iters >=
    dim`` the result is exact up to rounding. At a trained minimum the largest algebraic
    eigenvalue is also the largest in magnitude; in a saddle with a more negative eigenvalue, it
    is still the top one returned here.
    """
    # drawn on the CPU, so a seed gives the same start on any device; _lanczos moves it to op.device
    start = torch.randn(op.dim, generator=_generator(seed), dtype=DTYPE, device="cpu")

    def stop(alphas, betas, beta):
        values, vectors = torch.linalg.eigh(_tridiagonal(torch.tensor(alphas, dtype=DTYPE, device="cpu"),
                                                         torch.tensor(betas, dtype=DTYPE, device="cpu")))
        return beta * abs(float(vectors[-1, -1])) <= tol * abs(float(values[-1]))

    alphas, betas = _lanczos(op, start, iters, stop)
    return float(torch.linalg.eigvalsh(_tridiagonal(alphas, betas))[-1])


# -- trace ----------------------------------------------------------------------------------------
class TraceEstimate(NamedTuple):
    """Hutchinson estimate: ``mean`` of ``v^T H v`` over the probes and its standard error."""

    mean: float
    stderr: float
    samples: torch.Tensor


def hutchinson_trace(op, probes=100, seed=0):
    """Hutchinson's estimate of ``tr(H)`` with Rademacher probes.

    The probes are ``rademacher(dim, g)`` drawn in turn from ``g = torch.Generator().manual_seed(seed)``.
    Returns a :class:`TraceEstimate` (``mean, stderr, samples``); the standard error is the
    sample standard deviation (ddof 1) over ``sqrt(probes)`` (NaN for a single probe).
    """
    if probes < 1:
        raise ValueError(f"need at least one probe, got {probes}")
    generator = _generator(seed)
    samples = []
    for _ in range(probes):
        v = rademacher(op.dim, generator).to(op.device)
        samples.append(float(torch.dot(v, op.matvec(v))))
    samples = torch.tensor(samples, dtype=DTYPE, device="cpu")
    stderr = float(samples.std(unbiased=True) / math.sqrt(probes)) if probes > 1 else math.nan
    return TraceEstimate(float(samples.mean()), stderr, samples)


# -- stochastic Lanczos quadrature ----------------------------------------------------------------
class Spectrum(NamedTuple):
    """SLQ result: per probe the Ritz values (``nodes``) and their weights (summing to 1)."""

    nodes: List[torch.Tensor]
    weights: List[torch.Tensor]

    def all_nodes(self):
        return torch.cat(self.nodes)

    def density(self, grid, sigma):
        """Gaussian-smoothed spectral density on ``grid``, averaged over the probes."""
        grid = torch.as_tensor(grid, dtype=DTYPE)
        total = torch.zeros_like(grid)
        for nodes, weights in zip(self.nodes, self.weights):
            kernel = torch.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / sigma) ** 2)
            total += (kernel * weights[None, :]).sum(dim=1) / (sigma * math.sqrt(2 * math.pi))
        return total / len(self.nodes)


def slq_spectrum(op, probes=4, iters=50, seed=0):
    """Stochastic Lanczos quadrature: ``probes`` Lanczos runs of ``min(iters, dim)`` steps.

    Each run starts from a normalised Rademacher vector (drawn as in :func:`hutchinson_trace`)
    and uses full reorthogonalisation; the eigen-decomposition ``T = S diag(theta) S^T`` of its
    tridiagonal matrix gives the Ritz values ``theta`` and weights ``S[0, :]**2``.
    """
    if probes < 1:
        raise ValueError(f"need at least one probe, got {probes}")
    generator = _generator(seed)
    nodes, weights = [], []
    for _ in range(probes):
        alphas, betas = _lanczos(op, rademacher(op.dim, generator), iters)
        values, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas))
        nodes.append(values)
        weights.append(vectors[0, :] ** 2)
    return Spectrum(nodes, weights)


def condition_number(spectrum, rtol=None, dtype=torch.float64):
    """``kappa = theta_max / theta_min+`` over the Ritz values of all probes of an SLQ ``spectrum``.

    ``theta_min+`` is the smallest Ritz value above ``rtol * theta_max``; ``rtol`` defaults to
    :func:`positive_threshold` of ``dtype`` (the HVPs' dtype: 1e-8 for float64, 1e-5 otherwise).
    NaN when no Ritz value is positive. ``spectrum`` may also be a :class:`HessianOperator`, for
    which :func:`slq_spectrum` runs with its defaults.
    """
    if isinstance(spectrum, HessianOperator):
        dtype = spectrum.dtype
        spectrum = slq_spectrum(spectrum)
    rtol = positive_threshold(dtype) if rtol is None else rtol
    nodes = spectrum.all_nodes()
    top = float(nodes.max())
    if not top > 0:
        return math.nan
    positive = nodes[nodes > rtol * top]
    return top / float(positive.min())


def hessian_summary(net, loss_closure, probes=100, iters=50, seed=0, slq_probes=4, tol=1e-4):
    """λmax (Lanczos, ``iters`` steps at most), trace (Hutchinson, ``probes``) and κ (SLQ,
    ``slq_probes`` runs of ``iters`` steps) of the Hessian of ``loss_closure()`` w.r.t. the kept
    parameters of ``net``, all from one :class:`HessianOperator` seeded with ``seed``.

    Returns ``dict(lambda_max, trace, trace_stderr, condition_number, dim, loss, num_hvp)``
    (``loss``: the loss on the fixed subset). ``net`` must integrate with backprop through the
    solver (``set_solver(net, adjoint=False)``).
    """
    op = HessianOperator(net, loss_closure, seed=seed)
    top = lambda_max(op, iters=iters, tol=tol, seed=seed)
    trace = hutchinson_trace(op, probes=probes, seed=seed)
    kappa = condition_number(slq_spectrum(op, probes=slq_probes, iters=iters, seed=seed), dtype=op.dtype)
    summary = dict(lambda_max=top, trace=trace.mean, trace_stderr=trace.stderr, condition_number=kappa,
                   dim=op.dim, loss=op.loss, num_hvp=op.num_hvp)
    op.release()
    return summary
