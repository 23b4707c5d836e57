"""Reduced multiscale MNIST flow: cost of a training batch of 8 images.

``ffjord_multiscale_mnist`` keeps the paper's multiscale layout on 1x28x28 images (3 scales,
logit transform, squeezes, factoring out) but with one CNF per block position instead of two
(``blocks=1``: 5 CNFs) and 16-channel vector fields (``hidden=(16, 16, 16)``, 31,107
parameters instead of the paper's 800,646), loose tolerances (atol = rtol = 1e-3), and fixed-step
solvers at step 0.25 (4 steps) so that one pass stays at 0.5-3 s on one core. The batch is the
first 8 MNIST test images, dequantised, when ``../shared/data/mnist`` holds them (else uniform
noise images). Nets are freshly initialised (seed 0): the numbers measure the architecture,
solver and sparsity pattern, not a trained field.

Groups ``image: solver|gradient|backend`` compare the solver configurations of ``conftest.py``
on the dense net and WT/FT at keep 0.2; the ``solver`` group adds keep 0.5 for the dopri5 adjoint.
"""
import pytest
import torch

import torchprune_flows as tf

from conftest import SOLVER_CONFIGS, comparison_params, mnist_images, prepared, run_case, warm_up

NETWORK = "ffjord_multiscale_mnist"
SHAPE = dict(hidden=(16, 16, 16), blocks=1)
TOLERANCES = dict(atol=1e-3, rtol=1e-3, step_size=0.25)
BATCH = 8
GRID_CASES = [(None, 1.0), ("WT", 0.2), ("FT", 0.2)]
METHOD_CASES = [("WT", 0.5), ("FT", 0.5)]


def build(**solver):
    torch.manual_seed(0)
    return tf.build_network(NETWORK, **SHAPE, **{**TOLERANCES, **solver})


@pytest.fixture(scope="module")
def image_batch():
    images = mnist_images(BATCH)
    warm_up(build, images[:2])
    return images


def _case(benchmark, image_batch, group, label, method, keep):
    benchmark.group = group
    net, reached = prepared(build(**SOLVER_CONFIGS[label]), method, keep)
    run_case(benchmark, net, image_batch, rounds=1, family="image", network=NETWORK, solver=label,
             method=method or "dense", keep_target=keep, keep_ratio=reached)


@pytest.mark.parametrize("axis,label,method,keep", comparison_params(GRID_CASES))
def test_image_forward_backward(benchmark, image_batch, axis, label, method, keep):
    _case(benchmark, image_batch, f"image: {axis}", label, method, keep)


@pytest.mark.parametrize("method,keep", METHOD_CASES, ids=[f"{m}-{k}" for m, k in METHOD_CASES])
def test_image_methods_forward_backward(benchmark, image_batch, method, keep):
    _case(benchmark, image_batch, "image: solver", "dopri5-adjoint", method, keep)
