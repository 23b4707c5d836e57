"""Run-time patches that let torchprune v2.2.0 (2021) run on a current stack.

Applied only by the torchprune launcher (and in the worker processes it spawns), never by a
plain ``import torchprune_flows``:

- NumPy 2 removed the aliases ``np.int`` / ``np.bool`` that torchprune's logger, evaluator and
  decomposition allocator use: they are set back to ``int`` / ``bool``.
- torch >= 2.6 loads checkpoints with ``weights_only=True``; torchprune's own checkpoints hold
  NumPy arrays, so ``torch.load`` defaults to ``weights_only=False`` again (a caller that passes
  the argument keeps its choice). Only load checkpoints you wrote yourself.
- Matplotlib 3.10 removed ``FigureCanvasAgg.tostring_rgb``, which torchprune's grapher calls: it
  is provided from ``buffer_rgba``.
- SciPy's ``brentq`` now calls ``np.isnan`` on the function's value, which fails for the CUDA
  tensors torchprune's filter allocator returns (its FT crashed on an H200): values are
  converted to floats first.

Heavy import-time dependencies of torchprune (transformers, datasets, cvxpy, ...) are not
patched: install them (see the README, "Using it with torchprune").
"""
import functools

#: Set in the launcher's environment so that spawned workers apply the patches too.
COMPAT_ENV = "TORCHPRUNE_FLOWS_TORCHPRUNE_COMPAT"

_applied = []


def apply():
    """Apply every patch once per process; returns the names of those applied now."""
    if _applied:
        return []
    _applied.append(True)
    done = []
    import numpy as np

    for alias, target in (("int", int), ("bool", bool)):
        try:
            getattr(np, alias)
        except AttributeError:
            setattr(np, alias, target)
            done.append(f"numpy.{alias}")

    import torch

    if not getattr(torch.load, "_torchprune_flows_compat", False):
        original = torch.load

        @functools.wraps(original)
        def load(*args, **kwargs):
            kwargs.setdefault("weights_only", False)
            return original(*args, **kwargs)

        load._torchprune_flows_compat = True
        torch.load = load
        done.append("torch.load(weights_only=False)")

    from scipy import optimize

    if not getattr(optimize.brentq, "_torchprune_flows_compat", False):
        original_brentq = optimize.brentq

        @functools.wraps(original_brentq)
        def brentq(f, *args, **kwargs):
            return original_brentq(lambda x, *extra: float(f(x, *extra)), *args, **kwargs)

        brentq._torchprune_flows_compat = True
        optimize.brentq = brentq
        done.append("scipy.optimize.brentq(float values)")

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return done
    if not hasattr(FigureCanvasAgg, "tostring_rgb"):
        def tostring_rgb(self):
            return bytes(np.asarray(self.buffer_rgba())[..., :3].tobytes())

        FigureCanvasAgg.tostring_rgb = tostring_rgb
        done.append("FigureCanvasAgg.tostring_rgb")
    return done
