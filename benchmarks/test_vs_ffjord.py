"""Side by side with the reference FFJORD implementation on identical weights and batches.

FFJORD's own ``lib`` (``../shared/vendor/ffjord/lib``, a test fixture: copied to a temporary
folder at run time and imported from there, never part of this repository) builds its net for
each shape; the same weights are copied into ours, and each round times one training pass
(loss of the batch, then its gradient) of FFJORD's net and then of ours, interleaved in this
process, on one thread, with the same Hutchinson probes (the same seed before each pass: both
draw their probe as the first random numbers of each block's solve). pytest-benchmark times ours;
``extra_info`` holds both sides:

``shape``, ``network``, ``dim``, ``batch``, ``gradient`` (ours: seminorm / adjoint / backprop), ``atol``, ``rtol``,
``evaluation`` (ours: one-pass / generic, see ``torchprune_flows/cnf/affine_hutchinson.py``), ``mode``
(MINIBOONE's extra cases: the generic evaluation, backprop through the solver); every shape runs
ours' two adjoints on torchdiffeq (the default backend) and on torchdyn's solver (``backend``)
(and ``family``, ``method``, ``solver_method``, ``backend``, ``params`` as in ``conftest.py``)
``nfe_forward``, ``nfe_backward``                    ours, per pass (summed over CNF blocks)
``ffjord_nfe_forward``, ``ffjord_nfe_backward``      FFJORD's (plain adjoint: its lib's only mode)
``seconds``, ``ffjord_seconds``                      every round's time, both sides
``time_ratio``                                       median ours / median FFJORD
``peak_memory_mib``, ``ffjord_peak_memory_mib``      peak tensor memory of one more (untimed) pass
                                                     each (``torchprune_flows.analysis.memory``)
``loss``, ``ffjord_loss``                            the batch's NLL on each side (MNIST: bits/dim,
                                                     FFJORD ``train_cnf.py``'s loss)
``grad_rel_diff``                                    ||g_ours - g_ffjord|| / ||g_ffjord|| over the
                                                     weights both nets share (all but ours' dL/dT:
                                                     FFJORD's lib detaches T, so never trains it;
                                                     MNIST: in FFJORD's concat-conv layout)

and, measured once per shape and backend in float64 on the first ``ACCURACY_BATCH`` rows of the
batch against ours (on torchdiffeq) backpropagated through dopri5 at atol = rtol = 1e-10 (the same
probes), the relative gradient error of each side at the shape's tolerances over the shared weights:
``accuracy_batch``, ``grad_err_seminorm``, ``grad_err_adjoint``, ``grad_err_backprop`` (ours), ``ffjord_grad_err``,
``end_time_grad_err`` (ours' dL/dT, seminorm; where T is trained) and ``seminorm_vs_adjoint`` (the
relative difference between ours' two adjoints' gradients); the same for float32 training passes
against that float64 reference on the float32 probes: ``grad_err_f32_seminorm``,
``grad_err_f32_adjoint``, ``ffjord_grad_err_f32``. MNIST: on the first image
(``MNIST_ACCURACY_BATCH``) against ours' plain adjoint at atol = rtol = 1e-10, since backprop
through dopri5 at 1e-10 would hold every evaluation's conv activations; no ``grad_err_backprop``.

Shapes: the toy flow ``ffjord_l2_h128_sigmoid`` (ToyGaussians, briefly trained as in
``test_toy_cost.py``; FFJORD's ODEnet with ``ignore`` layers, i.e. autonomous Linear layers, and
its activations swapped for Sigmoid after construction since its table has no sigmoid), the
paper's MINIBOONE net ``ffjord_l2_hm20_f1_softplus`` (1,000 real rows when
``../shared/data/miniboone`` has them) and the other tabular nets of the paper at a reduced batch
of Gaussian rows (fresh weights, seed 0). Tolerances are the paper's (toy 1e-5; tabular atol 1e-8,
rtol 1e-6). MNIST: the paper's multiscale ``ffjord_multiscale_mnist`` (800,646 parameters, 10 CNFs
over 3 scales, dopri5 at atol = rtol = 1e-5) against FFJORD's own ``ODENVP`` built with
``train_cnf.py``'s MNIST settings, fresh weights (seed 0), the first 8 dequantised MNIST test images
(uniform noise images without ``../shared/data/mnist``), one round per gradient mode, loss in
bits/dim; the weight mapping (FFJORD's concat convs read t as their first input channel, ours keep
it in a separate ``time`` conv) and the conventions checked to agree are in
``ffjord_multiscale.py``, tested in ``tests/test_vs_ffjord_multiscale.py``. Skipped when
``../shared/vendor/ffjord/lib`` is absent.
"""
import contextlib
import copy
import math
import os
import statistics
import time
import warnings

import pytest
import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.analysis.memory import peak_memory_mib
from torchprune_flows.cnf import cnf_blocks, dynamics, nfe_counts, set_solver
from torchprune_flows.data.toy import ToyGaussians
from torchprune_flows.objectives import bits_per_dim
from torchprune_flows.pruning import count_nonzero, export_state, import_state

from conftest import SHARED_DATA, mnist_images
from ffjord_multiscale import (PAPER_MNIST, copy_multiscale_weights, ffjord_bits_per_dim, ffjord_lib, ffjord_nfe,
                               ffjord_odenvp, multiscale_grads)

FFJORD_LIB = os.path.join(os.path.dirname(SHARED_DATA), "vendor", "ffjord", "lib")

TOY = dict(network="ffjord_l2_h128_sigmoid", dim=2, batch=1024, rounds=3)
TOY_TRAIN_STEPS, TOY_TRAIN_BATCH, TOY_TRAIN_LR = 400, 256, 1e-2

#: shape label -> (network, D, batch, rounds); MINIBOONE at the paper's batch, the others reduced
TABULAR = {
    "miniboone": ("ffjord_l2_hm20_f1_softplus", 43, 1000, 3),
    "power": ("ffjord_l3_hm10_f5_tanh", 6, 500, 1),
    "gas": ("ffjord_l3_hm20_f5_tanh", 8, 500, 1),
    "hepmass": ("ffjord_l2_hm10_f10_softplus", 21, 250, 1),
    "bsds300": ("ffjord_l3_hm20_f2_softplus", 63, 100, 1),
}

#: ours' gradient modes compared against FFJORD's plain adjoint
GRADIENTS = {"seminorm": dict(adjoint=True, seminorm=True), "adjoint": dict(adjoint=True, seminorm=False)}
#: every case: ours' two adjoints on torchdiffeq (the default backend) and on torchdyn's solver
ALL_GRADIENTS = {**GRADIENTS, **{f"torchdyn-{k}": dict(v, backend="torchdyn") for k, v in GRADIENTS.items()}}

ACCURACY_BATCH = 128
_ACCURACY = {}  # shape -> accuracy fields, measured by the first case of the shape
_FFJORD_MEMORY = {}  # (shape, batch) -> FFJORD's peak MiB: its pass is the same whatever our gradient mode


@pytest.fixture(scope="module")
def ffjord_package(tmp_path_factory):
    """FFJORD's ``lib`` (``lib.layers``, ``lib.odenvp``), imported from a temporary copy of the vendored folder."""
    if not os.path.isdir(FFJORD_LIB):
        pytest.skip(f"reference FFJORD lib not found at {FFJORD_LIB}")
    with ffjord_lib(FFJORD_LIB, tmp_path_factory.mktemp("ffjord")) as lib:
        yield lib


@pytest.fixture(scope="module")
def ffjord(ffjord_package):
    """FFJORD's ``lib.layers``."""
    return ffjord_package.layers


def ffjord_chain(layers, blocks, hidden_dims, dim, layer_type, activation, atol, rtol, train_T):
    """FFJORD's SequentialFlow of ``blocks`` CNFs, each an ODEnet in an ODEfunc (Hutchinson, Gaussian)."""
    cnfs = []
    for _ in range(blocks):
        net = layers.ODEnet(tuple(hidden_dims), (dim,), strides=None, conv=False, layer_type=layer_type,
                            nonlinearity="softplus" if activation == "sigmoid" else activation)
        if activation == "sigmoid":  # not in FFJORD's NONLINEARITIES table
            for i in range(len(net.activation_fns)):
                net.activation_fns[i] = nn.Sigmoid()
        func = layers.ODEfunc(net, divergence_fn="approximate", residual=False, rademacher=False)
        cnfs.append(layers.CNF(func, T=1.0, train_T=train_T, solver="dopri5", atol=atol, rtol=rtol))
    return layers.SequentialFlow(cnfs)


def _pairs(ours, theirs):
    """(our parameter, FFJORD's parameter) for every weight the two nets share."""
    pairs = []
    for block, cnf in zip(ours.chain, theirs.chain):
        field, net = block.vector_field, cnf.odefunc.diffeq
        if hasattr(field, "layers"):  # concatsquash
            for mine, theirs_layer in zip(field.layers, net.layers):
                pairs += [(mine.main.weight, theirs_layer._layer.weight), (mine.main.bias, theirs_layer._layer.bias),
                          (mine.gate.weight, theirs_layer._hyper_gate.weight),
                          (mine.gate.bias, theirs_layer._hyper_gate.bias),
                          (mine.shift.weight, theirs_layer._hyper_bias.weight)]
        else:  # autonomous MLP
            linears = [m for m in field.net if isinstance(m, nn.Linear)]
            for mine, theirs_layer in zip(linears, net.layers):
                pairs += [(mine.weight, theirs_layer._layer.weight), (mine.bias, theirs_layer._layer.bias)]
    return pairs


def copy_weights(ours, theirs):
    with torch.no_grad():
        for mine, other in _pairs(ours, theirs):
            assert mine.shape == other.shape
            other.copy_(mine)
        for block, cnf in zip(ours.chain, theirs.chain):
            cnf.sqrt_end_time.copy_(block.odefunc.sqrt_end_time)


def ffjord_pass(model, x):
    """FFJORD's NLL of ``x`` and its gradient; returns (loss, NFE-F, NFE-B)."""
    model.zero_grad(set_to_none=True)
    z, delta_logp = model(x, torch.zeros(x.shape[0], 1, dtype=x.dtype))
    logpz = (-0.5 * math.log(2 * math.pi) - 0.5 * z.pow(2)).sum(1, keepdim=True)
    loss = -(logpz - delta_logp).mean()
    nfe_forward = sum(cnf.num_evals() for cnf in model.chain)
    loss.backward()
    return loss.item(), int(nfe_forward), int(sum(cnf.num_evals() for cnf in model.chain) - nfe_forward)


def ours_pass(net, x):
    net.zero_grad(set_to_none=True)
    loss = -net.log_prob(x).mean()
    loss.backward()
    counts = nfe_counts(net)
    return loss.item(), counts["forward"], counts["backward"]


def _shared_grads(pairs, side):
    return torch.cat([pair[side].grad.flatten() for pair in pairs])


def pair_grads(ours, theirs):
    """(ours' gradient, FFJORD's gradient) over the weights both toy / tabular nets share."""
    pairs = _pairs(ours, theirs)
    return _shared_grads(pairs, 0), _shared_grads(pairs, 1)


def ours_bpd_pass(net, x):
    """Ours' bits/dim of the images ``x`` and its gradient; returns (loss, NFE-F, NFE-B)."""
    net.zero_grad(set_to_none=True)
    loss = bits_per_dim(net(x))
    loss.backward()
    counts = nfe_counts(net)
    return loss.item(), counts["forward"], counts["backward"]


def ffjord_bpd_pass(model, x):
    """FFJORD's bits/dim of the images ``x`` (``train_cnf.py``'s loss) and its gradient."""
    model.zero_grad(set_to_none=True)
    loss = ffjord_bits_per_dim(model, x)
    nfe_forward = ffjord_nfe(model)
    loss.backward()
    return loss.item(), nfe_forward, ffjord_nfe(model) - nfe_forward


#: (ours' pass, FFJORD's pass, shared gradients) of a density model (nats) and of an image flow (bits/dim)
NATS = (ours_pass, ffjord_pass, pair_grads)
BITS = (ours_bpd_pass, ffjord_bpd_pass, multiscale_grads)


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


#: the reference gradient of ``gradient_accuracy``: ours backpropagated through dopri5 at 1e-10
BACKPROP_REFERENCE = dict(backend="torchdiffeq", adjoint=False, atol=1e-10, rtol=1e-10)


def gradient_accuracy(ours, theirs, x, passes=NATS, reference=BACKPROP_REFERENCE, backprop=True):
    """Float64 gradient errors of ours (seminorm and plain adjoint; ``backprop``: also backprop
    through the solver) and FFJORD's at their solver tolerances against ours solved with the
    ``reference`` options, on the batch ``x`` (the same probes: seed 0 before every pass)."""
    ours_step, ffjord_step, shared_grads = passes
    ours, theirs, x = copy.deepcopy(ours).double(), copy.deepcopy(theirs).double(), x.double()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ffjord_step(theirs, x)
    end_times = [b.odefunc.sqrt_end_time for b in cnf_blocks(ours) if b.odefunc.sqrt_end_time.requires_grad]
    modes = [("reference", reference), ("seminorm", GRADIENTS["seminorm"]), ("adjoint", GRADIENTS["adjoint"])]
    modes += [("backprop", dict(adjoint=False))] if backprop else []
    grads = {}
    for label, options in modes:
        net = copy.deepcopy(ours)
        set_solver(net, **options)
        torch.manual_seed(0)
        ours_step(net, x)
        grads[label], ffjord_grads = shared_grads(net, theirs)
        grads[label + "_T"] = [b.odefunc.sqrt_end_time.grad for b in cnf_blocks(net)] if end_times else []
    info = _float32_accuracy(ours, theirs, x, passes, reference)
    info.update(accuracy_batch=len(x), ffjord_grad_err=_relative(ffjord_grads, grads["reference"]),
                grad_err_seminorm=_relative(grads["seminorm"], grads["reference"]),
                grad_err_adjoint=_relative(grads["adjoint"], grads["reference"]),
                seminorm_vs_adjoint=_relative(grads["seminorm"], grads["adjoint"]))
    if backprop:
        info["grad_err_backprop"] = _relative(grads["backprop"], grads["reference"])
    if end_times:
        info["end_time_grad_err"] = _relative(torch.stack(grads["seminorm_T"]), torch.stack(grads["reference_T"]))
    return info


@contextlib.contextmanager
def _float32_probes():
    """Hutchinson probes drawn in float32 (and cast), so that a float64 solve uses the very probes
    of a float32 pass with the same seed."""
    sample = dynamics.sample_probe
    dynamics.sample_probe = lambda like, kind: sample(like.float(), kind).to(like.dtype)
    try:
        yield
    finally:
        dynamics.sample_probe = sample


def _float32_accuracy(ours, theirs, x, passes, reference):
    """Gradient errors of training as it runs, in float32 (ours: both adjoints with the net's own
    options; FFJORD's), against ours in float64 solved with the ``reference`` options on the same
    probes: ``grad_err_f32_seminorm``, ``grad_err_f32_adjoint``, ``ffjord_grad_err_f32``."""
    ours_step, ffjord_step, shared_grads = passes
    wide = copy.deepcopy(ours).double()
    set_solver(wide, **reference)
    torch.manual_seed(0)
    with _float32_probes():
        ours_step(wide, x.double())
    theirs32 = copy.deepcopy(theirs).float()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ffjord_step(theirs32, x.float())
    exact, ffjord_grads = shared_grads(wide, theirs32)
    info = {"ffjord_grad_err_f32": _relative(ffjord_grads.double(), exact)}
    for label, options in GRADIENTS.items():
        net = copy.deepcopy(ours).float()
        set_solver(net, **options)
        torch.manual_seed(0)
        ours_step(net, x.float())
        info[f"grad_err_f32_{label}"] = _relative(shared_grads(net, theirs32)[0].double(), exact)
    return info


def side_by_side(benchmark, ours, theirs, x, rounds, passes=NATS, accuracy=None, **info):
    """Interleave FFJORD's pass (in pedantic's untimed setup, timed here) and ours (timed by
    pytest-benchmark) for ``rounds`` rounds; everything goes to ``extra_info``. ``passes``: the two
    training passes and the shared gradients (:data:`NATS`, :data:`BITS`); ``accuracy(ours,
    theirs, x)``: the shape's gradient-accuracy fields (default :func:`gradient_accuracy` on the
    first ``ACCURACY_BATCH`` rows)."""
    ours_step, ffjord_step, shared_grads = passes
    theirs.train()
    ref = {"seconds": []}

    def setup():
        torch.manual_seed(0)
        start = time.perf_counter()
        ref["loss"], ref["nfe_forward"], ref["nfe_backward"] = ffjord_step(theirs, x)
        ref["seconds"].append(time.perf_counter() - start)
        torch.manual_seed(0)  # the same probes for ours

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FFJORD's torch.tensor(t) copy-construct warning
        loss, nfe_f, nfe_b = benchmark.pedantic(ours_step, args=(ours, x), setup=setup, rounds=rounds,
                                                iterations=1, warmup_rounds=0)
    seconds = list(benchmark.stats.stats.data)
    block = cnf_blocks(ours)[0]
    spec = block.solver
    benchmark.extra_info.update(info)
    benchmark.extra_info.update(  # the fields of conftest.py's cases, for experiment.analyze cost
        family="vs FFJORD", method="dense", keep_target=1.0, keep_ratio=1.0, params=count_nonzero(ours),
        solver_method=spec.method, backend=spec.backend)
    gradient = ("backprop" if not spec.adjoint else "seminorm" if spec.seminorm else "adjoint")
    benchmark.extra_info.update(
        batch=len(x), atol=spec.atol, rtol=spec.rtol, gradient=gradient,
        evaluation=("generic" if block.odefunc.twice_differentiable
                    or not hasattr(block.vector_field, "as_affine_stack") else "one-pass"),
        nfe_forward=nfe_f, nfe_backward=nfe_b, loss=loss, seconds=seconds,
        ffjord_nfe_forward=ref["nfe_forward"], ffjord_nfe_backward=ref["nfe_backward"],
        ffjord_loss=ref["loss"], ffjord_seconds=ref["seconds"],
        time_ratio=statistics.median(seconds) / statistics.median(ref["seconds"]),
        grad_rel_diff=_relative(*shared_grads(ours, theirs)),
    )
    key = (info["shape"], spec.backend)  # the accuracy of ours' adjoints on this backend
    if key not in _ACCURACY:
        _ACCURACY[key] = (accuracy or (lambda a, b, rows: gradient_accuracy(a, b, rows[:ACCURACY_BATCH])))(
            ours, theirs, x)
    benchmark.extra_info.update(_ACCURACY[key])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        benchmark.extra_info["peak_memory_mib"] = peak_memory_mib(ours_step, ours, x, device=x.device)
        memory_key = (info["shape"], len(x))
        if memory_key not in _FFJORD_MEMORY:
            torch.manual_seed(0)
            _FFJORD_MEMORY[memory_key] = peak_memory_mib(ffjord_step, theirs, x, device=x.device)
    benchmark.extra_info["ffjord_peak_memory_mib"] = _FFJORD_MEMORY[memory_key]
    assert loss == pytest.approx(ref["loss"], rel=1e-4, abs=1e-4)  # the same model, batch and probes


@pytest.fixture(scope="module")
def trained_toy_state():
    """(state of the briefly trained toy flow, the timed batch of ToyGaussians test points)."""
    train = ToyGaussians(split="train", seed=0).data
    test = ToyGaussians(split="test", seed=0).data[:TOY["batch"]]
    torch.manual_seed(0)
    net = tf.build_network(TOY["network"], num_classes=2, method="rk4", step_size=0.25, adjoint=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=TOY_TRAIN_LR)
    generator = torch.Generator().manual_seed(0)
    for _ in range(TOY_TRAIN_STEPS):
        batch = train[torch.randint(0, len(train), (TOY_TRAIN_BATCH,), generator=generator)]
        optimizer.zero_grad(set_to_none=True)
        (-net.log_prob(batch).mean()).backward()
        optimizer.step()
    return export_state(net), test


@pytest.mark.parametrize("gradient", list(ALL_GRADIENTS))
def test_toy_vs_ffjord(benchmark, ffjord, trained_toy_state, gradient):
    benchmark.group = "vs FFJORD: toy"
    state, x = trained_toy_state
    ours = import_state(tf.build_network(TOY["network"], num_classes=2, method="dopri5", **ALL_GRADIENTS[gradient]),
                        state)
    theirs = ffjord_chain(ffjord, 1, [128], 2, "ignore", "sigmoid", atol=1e-5, rtol=1e-5, train_T=False)
    copy_weights(ours, theirs)
    side_by_side(benchmark, ours, theirs, x, TOY["rounds"], shape="toy", network=TOY["network"], dim=2)


def _tabular_batch(shape, dim, batch, miniboone_batch):
    if shape == "miniboone":
        return miniboone_batch[:batch]
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("gradient", list(ALL_GRADIENTS))
@pytest.mark.parametrize("shape", list(TABULAR))
def test_tabular_vs_ffjord(benchmark, ffjord, miniboone_batch, shape, gradient):
    tabular_side_by_side(benchmark, ffjord, miniboone_batch, shape, ALL_GRADIENTS[gradient])


def tabular_side_by_side(benchmark, ffjord, miniboone_batch, shape, options, generic=False):
    """Ours (``options`` for every block; ``generic``: every evaluation on the generic autograd
    path) against FFJORD's net of the same tabular ``shape`` with our weights copied into it."""
    benchmark.group = f"vs FFJORD: {shape}"
    network, dim, batch, rounds = TABULAR[shape]
    nhidden, multiplier, blocks, activation = _parse_tabular(network)
    torch.manual_seed(0)
    ours = tf.build_network(network, num_classes=dim, **options)
    for block in ours.chain:
        block.odefunc.twice_differentiable = generic
    theirs = ffjord_chain(ffjord, blocks, [multiplier * dim] * nhidden, dim, "concatsquash", activation,
                          atol=1e-8, rtol=1e-6, train_T=True)
    copy_weights(ours, theirs)
    side_by_side(benchmark, ours, theirs, _tabular_batch(shape, dim, batch, miniboone_batch), rounds,
                 shape=shape, network=network, dim=dim)


#: MINIBOONE only: ours' other ways of computing the same gradient, each against FFJORD in one run
#: (``generic``: the seminorm adjoint with every evaluation on the generic autograd path, i.e. a
#: double backward through the vector-Jacobian product, as before the one-pass path existed)
MINIBOONE_MODES = {
    "seminorm-generic": (dict(adjoint=True, seminorm=True), True),
    "backprop": (dict(adjoint=False), False),
}


@pytest.mark.parametrize("mode", list(MINIBOONE_MODES))
def test_miniboone_modes_vs_ffjord(benchmark, ffjord, miniboone_batch, mode):
    options, generic = MINIBOONE_MODES[mode]
    benchmark.extra_info["mode"] = mode
    tabular_side_by_side(benchmark, ffjord, miniboone_batch, "miniboone", options, generic=generic)


def _parse_tabular(network):
    """(nhidden, hidden multiplier, blocks, activation) of ``ffjord_l{n}_hm{m}_f{b}_{act}``."""
    _, l_part, hm_part, f_part, activation = network.split("_")
    return int(l_part[1:]), int(hm_part[2:]), int(f_part[1:]), activation


#: the paper's MNIST multiscale flow (FFJORD train_cnf.py's settings, ``ffjord_multiscale.PAPER_MNIST``)
#: at a batch of 8 real test images, fresh weights (seed 0); one round per gradient mode (~12 s a
#: pass and side on one thread)
MNIST = dict(network="ffjord_multiscale_mnist", batch=8, rounds=1)
#: its gradient accuracy: float64 on the first image against ours' plain adjoint at 1e-10 (backprop
#: through dopri5 at 1e-10 would keep every evaluation's conv activations: gigabytes per image)
MNIST_ACCURACY_BATCH = 1
ADJOINT_REFERENCE = dict(backend="torchdiffeq", adjoint=True, seminorm=False, atol=1e-10, rtol=1e-10)


def _mnist_accuracy(ours, theirs, x):
    return gradient_accuracy(ours, theirs, x[:MNIST_ACCURACY_BATCH], passes=BITS, reference=ADJOINT_REFERENCE,
                             backprop=False)


@pytest.mark.parametrize("gradient", list(ALL_GRADIENTS))
def test_mnist_multiscale_vs_ffjord(benchmark, ffjord_package, gradient):
    benchmark.group = "vs FFJORD: mnist"
    paper = PAPER_MNIST
    torch.manual_seed(0)
    ours = tf.build_network(MNIST["network"], hidden=paper["hidden"], blocks=paper["blocks"], alpha=paper["alpha"],
                            atol=paper["atol"], rtol=paper["rtol"], **ALL_GRADIENTS[gradient])
    theirs = ffjord_odenvp(ffjord_package, paper["data_shape"], paper["hidden"], paper["blocks"], paper["alpha"],
                           atol=paper["atol"], rtol=paper["rtol"])
    copy_multiscale_weights(ours, theirs)
    side_by_side(benchmark, ours, theirs, mnist_images(MNIST["batch"]), MNIST["rounds"], passes=BITS,
                 accuracy=_mnist_accuracy, shape="mnist", network=MNIST["network"], dim=784)
