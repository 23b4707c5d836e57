"""FFJORD's multiscale ODENVP beside ours (``ffjord_multiscale_mnist``) on identical weights.

Used by ``test_vs_ffjord.py`` and ``tests/test_vs_ffjord_multiscale.py``. FFJORD's ``lib`` is a
test fixture (``../shared/vendor/ffjord/lib``): :func:`ffjord_lib` copies it to a temporary
folder and imports it from there; nothing of it is part of this repository.

What the two nets share and where their layouts differ (checked against the vendored sources):

* **Chain.** FFJORD's ``ODENVP.transforms[i]`` is a ``StackedCNFLayers`` (a ``SequentialFlow``):
  ``[LogitTransform]`` (scale 0 only), ``n_blocks`` CNFs, ``SqueezeLayer(2)``, ``n_blocks`` CNFs
  (the last scale: ``n_blocks`` CNFs). Ours' ``chain[i]`` is a ``FlowSequence`` with the same
  layers in the same order, so the k-th CNF module of one net (module order) is the k-th of the
  other.
* **Squeeze.** Both reshape (B, C, H, W) to (B, C, H/2, 2, W/2, 2) and permute to
  (B, C, 2, 2, H/2, W/2): output channel ``4 c + 2 i + j`` is input channel c at row offset i,
  column offset j. The same convention, so no channel permutation is needed.
* **Factor-out.** Both keep the first half of the channels ``x[:, :C/2]`` for the next scale and
  put ``x[:, C/2:]`` into the latent, which concatenates every scale's factored-out half, then
  the last scale's output, each flattened per sample.
* **Logit transform.** ``y = logit(alpha + (1 - 2 alpha) x)``, ``delta_logp -= sum log|dy/dx|``
  on both sides (FFJORD's ``log(s - s^2)`` against ours' ``log s + log1p(-s)``: equal to float
  rounding).
* **Concat convs.** FFJORD's ``ConcatConv2d`` is one ``Conv2d(C + 1, C_out)`` over ``[t, x]`` (the
  time channel FIRST, zero-padded like the data); ours is ``conv(x) + time(t)`` with a bias-free
  ``time`` conv over a constant t channel (same kernel and padding). FFJORD's
  ``weight[:, :1]`` is ours' ``time.weight``, ``weight[:, 1:]`` ours' ``conv.weight``, its bias
  ours' ``conv.bias``.
* **End time.** Both store ``sqrt_end_time`` (T = its square). Ours integrates d/ds = T f(sT, z)
  over s in [0, 1], FFJORD dz/dt = f(t, z) over [0, T]: the same steps at T = 1 (fresh nets).
  FFJORD's lib detaches T (``torch.tensor([0.0, T])``), so never trains it.
* **Prior and objective.** Both N(0, I) over the whole latent; FFJORD's ``train_cnf.py`` trains on
  bits/dim of the [0, 1]-scaled dequantised images, ``-(sum log p / (B C H W) - ln 256) / ln 2``,
  which is ours' ``objectives.bits_per_dim``.
* **Solver state.** FFJORD integrates the tuple ``(z, logp)``, for which torchdiffeq's step
  control takes the larger of the two parts' RMS errors; ours integrates one packed tensor
  ``[z, delta_logp]`` under one RMS norm. With 784 state entries per image and one log-density
  entry, the two controllers can pick different steps at the same tolerance.
"""
import contextlib
import math
import shutil
import sys
import warnings

import torch

from torchprune_flows.cnf import cnf_blocks

#: FFJORD train_cnf.py's MNIST multiscale settings (``--data mnist --dims 64,64,64 --strides 1,1,1,1
#: --num_blocks 2 --layer_type concat --multiscale True --rademacher False``; defaults: nonlinearity
#: softplus, alpha 1e-6, time_length 1.0, train_T True, solver dopri5, atol = rtol = 1e-5, adjoint)
PAPER_MNIST = dict(data_shape=(1, 28, 28), hidden=(64, 64, 64), blocks=2, alpha=1e-6, atol=1e-5, rtol=1e-5)


def _drop_lib_modules():
    for name in [n for n in sys.modules if n == "lib" or n.startswith("lib.")]:
        del sys.modules[name]


@contextlib.contextmanager
def ffjord_lib(source, root):
    """FFJORD's ``lib`` package, imported from a copy of ``source`` under ``root`` (``root`` goes
    on ``sys.path`` for the duration; ``lib.odenvp`` imports ``lib.layers`` absolutely)."""
    shutil.copytree(source, root / "lib")
    _drop_lib_modules()
    sys.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lib
            import lib.layers
            import lib.odenvp  # noqa: F401  (imported for its attribute on ``lib``)
        yield lib
    finally:
        sys.path.remove(str(root))
        _drop_lib_modules()


def ffjord_odenvp(lib, data_shape, hidden, blocks, alpha, atol, rtol, solver="dopri5", step_size=None):
    """FFJORD's ``ODENVP`` as ``train_cnf.py`` builds it for ``--multiscale True`` (concat convs,
    softplus, Hutchinson with a Gaussian probe, trainable T), with the solver options that its
    ``set_cnf_options`` sets on every CNF (``step_size`` for fixed-step solvers)."""
    model = lib.odenvp.ODENVP((1, *data_shape), n_blocks=blocks, intermediate_dims=tuple(hidden),
                              nonlinearity="softplus", alpha=alpha,
                              cnf_kwargs={"T": 1.0, "train_T": True, "regularization_fns": None})
    for cnf in ffjord_cnfs(model):
        cnf.solver, cnf.atol, cnf.rtol = solver, atol, rtol
        cnf.test_solver, cnf.test_atol, cnf.test_rtol = solver, atol, rtol
        if step_size is not None:
            cnf.solver_options["step_size"] = step_size
        cnf.odefunc.rademacher, cnf.odefunc.residual = False, False
    return model


def ffjord_cnfs(model):
    """FFJORD's CNF modules of ``model`` in module order."""
    return [m for m in model.modules() if type(m).__name__ == "CNF"]


def _conv_pairs(ours, theirs):
    """(our ConcatConv2d, FFJORD's ConcatConv2d) for every conv, after checking the two chains
    have the same layers in the same order."""
    for mine, other in zip(ours.chain, theirs.transforms):
        kinds = [type(layer).__name__ for layer in mine.layers]
        their_kinds = [type(layer).__name__ for layer in other.chain]
        expected = ["SqueezeLayer" if k == "Squeeze" else k for k in kinds]
        if expected != their_kinds:
            raise ValueError(f"the chains differ: ours {kinds}, FFJORD's {their_kinds}")
    blocks, their_blocks = cnf_blocks(ours), ffjord_cnfs(theirs)
    if len(blocks) != len(their_blocks):
        raise ValueError(f"{len(blocks)} CNF blocks against FFJORD's {len(their_blocks)}")
    pairs = []
    for block, cnf in zip(blocks, their_blocks):
        layers, their_layers = block.vector_field.layers, cnf.odefunc.diffeq.layers
        if len(layers) != len(their_layers):
            raise ValueError("a vector field has a different number of layers than FFJORD's")
        pairs += list(zip(layers, their_layers))
    return pairs


def copy_multiscale_weights(ours, theirs):
    """Copy ours' weights (a :class:`~torchprune_flows.networks.multiscale.MultiscaleFlow`) into
    FFJORD's ``ODENVP`` ``theirs``: per concat conv, FFJORD's weight = [time | data] along the input
    channels; every CNF's ``sqrt_end_time``; the logit transform's alpha must agree."""
    ours_alpha = ours.chain[0].layers[0].alpha
    if ours_alpha != theirs.transforms[0].chain[0].alpha:
        raise ValueError("the logit transforms' alpha differ")
    with torch.no_grad():
        for mine, other in _conv_pairs(ours, theirs):
            weight = torch.cat([mine.time.weight, mine.conv.weight], dim=1)
            if weight.shape != other._layer.weight.shape:
                raise ValueError(f"conv weight {tuple(weight.shape)} against FFJORD's "
                                 f"{tuple(other._layer.weight.shape)}")
            other._layer.weight.copy_(weight)
            other._layer.bias.copy_(mine.conv.bias)
        for block, cnf in zip(cnf_blocks(ours), ffjord_cnfs(theirs)):
            cnf.sqrt_end_time.copy_(block.odefunc.sqrt_end_time)


def multiscale_grads(ours, theirs):
    """(ours' gradient, FFJORD's gradient) over every weight both nets share, flattened in
    FFJORD's layout (ours' time and data conv weights concatenated as FFJORD stores them; ours'
    dL/dT left out: FFJORD never trains T)."""
    mine, other = [], []
    for layer, their_layer in _conv_pairs(ours, theirs):
        mine += [torch.cat([layer.time.weight.grad, layer.conv.weight.grad], dim=1).flatten(),
                 layer.conv.bias.grad.flatten()]
        other += [their_layer._layer.weight.grad.flatten(), their_layer._layer.bias.grad.flatten()]
    return torch.cat(mine), torch.cat(other)


def ffjord_bits_per_dim(model, x):
    """FFJORD ``train_cnf.py``'s ``compute_bits_per_dim`` of the [0, 1]-scaled images ``x``."""
    z, delta_logp = model(x, torch.zeros(x.shape[0], 1, dtype=x.dtype))
    logpz = (-0.5 * math.log(2 * math.pi) - 0.5 * z.pow(2)).reshape(z.shape[0], -1).sum(1, keepdim=True)
    logpx = logpz - delta_logp
    return -(logpx.sum() / x.nelement() - math.log(256)) / math.log(2)


def ffjord_nfe(model):
    return int(sum(cnf.num_evals() for cnf in ffjord_cnfs(model)))
