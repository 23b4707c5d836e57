"""Shared pieces of the solver-cost benchmarks (``pytest benchmarks/ --benchmark-only``).

Every case times one forward + backward pass of a batch (the unit of training cost: the NLL of
the batch and its gradient) and stores the NFE of that pass (summed over CNF blocks) in
``extra_info`` next to the timings:

``family``        toy / tabular / image
``network``       the registry name the net was built from
``method``        dense / WT / FT;  ``keep_target`` the keep ratio asked for,
``keep_ratio``    the keep ratio reached (nonzero parameters / all parameters)
``solver``        the solver configuration's label (see :data:`SOLVER_CONFIGS`)
``solver_method`` dopri5 / rk4 / euler;  ``gradient`` adjoint / seminorm / backprop;
``backend``       torchdiffeq / torchdyn;  ``atol``, ``rtol``, ``step_size`` (fixed-step only)
``nfe_forward``, ``nfe_backward``, ``params`` (nonzero), ``batch``
``peak_memory_mib``  peak tensor memory of one (untimed) forward + backward pass, above what was
                  allocated before it (``torchprune_flows.analysis.memory``)

Cases are grouped ``"<family>: <axis>"``: the ``solver`` axis compares dopri5, rk4 and euler
(all adjoint), ``gradient`` compares the adjoint, the seminorm adjoint and backprop through the
solver (all dopri5), ``backend`` compares torchdiffeq's seminorm adjoint with ours on torchdyn's
solver, seminorm and plain (torchdyn 1.0.6's own adjoint hard-codes the seminorm; ours on its
solver honours the option); a dopri5 baseline of the group's gradient mode is measured in each group so that
every group stands on its own.
``python -m experiment.analyze cost --benchmark bench.json`` turns the JSON into tables and plots.

Torch runs on one intra-op thread: the nets are small enough that a thread pool on a small,
shared machine mostly adds contention (often 2-4x slower, and much noisier).
"""
import gzip
import os

import numpy as np
import pytest
import torch

from torchprune_flows.analysis.memory import peak_memory_mib
from torchprune_flows.cnf import cnf_blocks, nfe_counts
from torchprune_flows.pruning import count_nonzero, count_parameters, prune
from torchprune_flows.runner.allocator import keep_freed_memory

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")

#: solver configurations (options of :class:`torchprune_flows.cnf.SolverSpec`) by label
SOLVER_CONFIGS = {
    "dopri5-adjoint": dict(backend="torchdiffeq", method="dopri5", adjoint=True, seminorm=False),
    "rk4-adjoint": dict(backend="torchdiffeq", method="rk4", adjoint=True, seminorm=False),
    "euler-adjoint": dict(backend="torchdiffeq", method="euler", adjoint=True, seminorm=False),
    "dopri5-seminorm": dict(backend="torchdiffeq", method="dopri5", adjoint=True, seminorm=True),
    "dopri5-backprop": dict(backend="torchdiffeq", method="dopri5", adjoint=False, seminorm=False),
    # our adjoint on torchdyn's solver (torchdyn's own hard-codes the seminorm; see solver._TorchdynAdjoint)
    "torchdyn-dopri5-seminorm": dict(backend="torchdyn", method="dopri5", adjoint=True, seminorm=True),
    "torchdyn-dopri5-adjoint": dict(backend="torchdyn", method="dopri5", adjoint=True, seminorm=False),
}

#: comparison axis -> the solver configurations shown side by side in its group
COMPARISONS = {
    "solver": ["dopri5-adjoint", "rk4-adjoint", "euler-adjoint"],
    "gradient": ["dopri5-adjoint", "dopri5-seminorm", "dopri5-backprop"],
    "backend": ["dopri5-seminorm", "torchdyn-dopri5-seminorm", "torchdyn-dopri5-adjoint"],
}

#: (pruning method or None for the dense net, keep ratio)
PRUNE_CASES = [(None, 1.0), ("WT", 0.5), ("FT", 0.5), ("WT", 0.2), ("FT", 0.2)]


def comparison_params(prune_cases=PRUNE_CASES, comparisons=COMPARISONS):
    """``pytest.param(axis, solver label, method, keep)`` for every comparison and prune case."""
    return [
        pytest.param(axis, label, method, keep, id=f"{axis}-{label}-{method or 'dense'}-{keep}")
        for axis, labels in comparisons.items()
        for label in labels
        for method, keep in prune_cases
    ]


def gradient_mode(spec):
    """adjoint / seminorm (adjoint with the state-only error norm) / backprop (through the solver)."""
    if not spec.adjoint:
        return "backprop"
    return "seminorm" if spec.seminorm else "adjoint"


def solver_info(net):
    """``extra_info`` fields describing the solver of ``net``'s (first) CNF block."""
    spec = cnf_blocks(net)[0].solver
    return dict(solver_method=spec.method, gradient=gradient_mode(spec), backend=spec.backend,
                atol=spec.atol, rtol=spec.rtol, step_size=spec.step_size if spec.fixed_step else None)


def forward_backward(net, x):
    """NLL of ``x`` and its gradient; returns the NFE of the pass."""
    net.zero_grad(set_to_none=True)
    loss = -net.log_prob(x).mean()
    loss.backward()
    if not torch.isfinite(loss):
        raise FloatingPointError("non-finite loss in a benchmark pass")
    return nfe_counts(net)


def prepared(net, method, keep, seed=0):
    """``net`` pruned with ``method`` to ``keep`` (dense for method None); returns (net, keep reached)."""
    torch.manual_seed(seed)
    original = count_parameters(net)
    if method is not None:
        prune(net, method, keep, original)
    return net, count_nonzero(net) / original


def run_case(benchmark, net, x, rounds, **info):
    """Benchmark a forward+backward pass of ``net`` on ``x``; NFE, solver and ``info`` go to extra_info."""
    torch.manual_seed(0)
    nfe = benchmark.pedantic(forward_backward, args=(net, x), rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(solver_info(net))
    benchmark.extra_info.update(info)
    benchmark.extra_info.update(nfe_forward=nfe["forward"], nfe_backward=nfe["backward"],
                                params=count_nonzero(net), batch=len(x))
    torch.manual_seed(0)
    benchmark.extra_info["peak_memory_mib"] = peak_memory_mib(forward_backward, net, x, device=x.device)
    assert nfe["forward"] > 0 and nfe["backward"] > 0


def warm_up(build, x):
    """One cheap pass per backend and gradient mode, so that no timed case pays for first calls
    (lazy imports, kernel selection); ``build(**solver_options)`` returns a fresh net."""
    for backend in ("torchdiffeq", "torchdyn"):
        for adjoint in (True, False):
            torch.manual_seed(0)
            forward_backward(build(backend=backend, method="euler", step_size=0.5, adjoint=adjoint), x)
            torch.manual_seed(0)
            forward_backward(build(backend=backend, method="dopri5", atol=1e-2, rtol=1e-2, adjoint=adjoint), x)


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """Torch on one intra-op thread for the whole benchmark session (restored afterwards), and
    freed memory kept for reuse as the runner keeps it (:mod:`torchprune_flows.runner.allocator`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    keep_freed_memory()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def miniboone_batch():
    """1,000 z-scored MINIBOONE rows (the real first rows if present, else a Gaussian batch)."""
    path = os.path.join(SHARED_DATA, "miniboone", "first_rows.npy")
    if os.path.exists(path):
        rows = np.load(path)[:1000]
        rows = (rows - rows.mean(0)) / rows.std(0)
    else:
        rows = np.random.default_rng(0).standard_normal((1000, 43))
    return torch.as_tensor(rows, dtype=torch.float32)


def _read_idx_gz(path):
    """uint8 images of a gzipped idx file (MNIST's format)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_images(count, seed=0):
    """``count`` dequantised MNIST test images in [0, 1], (count, 1, 28, 28); uniform noise
    images of that shape when the MNIST test file is not there."""
    generator = torch.Generator().manual_seed(seed)
    path = os.path.join(SHARED_DATA, "mnist", "t10k-images-idx3-ubyte.gz")
    if os.path.exists(path):
        pixels = torch.as_tensor(_read_idx_gz(path)[:count].copy(), dtype=torch.float32)
    else:
        pixels = torch.randint(0, 256, (count, 28, 28), generator=generator).float()
    return ((pixels + torch.rand(pixels.shape, generator=generator)) / 256.0).unsqueeze(1)
