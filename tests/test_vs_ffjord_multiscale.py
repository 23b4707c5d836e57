"""Ours' multiscale MNIST flow against FFJORD's own ODENVP with our weights copied into it
(``benchmarks/ffjord_multiscale.py``): the same latent, log-density and gradient.

FFJORD's ``lib`` (``../shared/vendor/ffjord/lib``) is copied to a temporary folder and imported
from there; skipped when it is absent. A small net (MNIST-shaped input, hidden channels
(8, 8, 8): 10 CNFs over 3 scales, as the paper's) in float64 with rk4 on the same time grid on
both sides (FFJORD's step is T times ours, which integrates over s in [0, 1]), so that any
difference is the mapping's, not the step-size controllers'.
"""
import importlib.util
import os

import pytest
import torch

import torchprune_flows as tf
from conftest import REPO_ROOT, SHARED_VENDOR
from torchprune_flows.cnf import cnf_blocks
from torchprune_flows.objectives import bits_per_dim

FFJORD_LIB = os.path.join(SHARED_VENDOR, "ffjord", "lib")
#: FFJORD's lib builds tensors from tensors (``torch.tensor(t)``, ``torch.tensor([0.0, T])``), which torch warns about
pytestmark = [pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning"),
              pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning")]
HIDDEN, BATCH, STEP = (8, 8, 8), 2, 0.25


def _helper():
    spec = importlib.util.spec_from_file_location(
        "ffjord_multiscale", os.path.join(REPO_ROOT, "benchmarks", "ffjord_multiscale.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(helper module, ours, FFJORD's ODENVP with ours' weights, images); both float64."""
    if not os.path.isdir(FFJORD_LIB):
        pytest.skip(f"reference FFJORD lib not found at {FFJORD_LIB}")
    helper = _helper()
    with helper.ffjord_lib(FFJORD_LIB, tmp_path_factory.mktemp("ffjord")) as lib:
        torch.manual_seed(0)
        ours = tf.build_network("ffjord_multiscale_mnist", hidden=HIDDEN, method="rk4", step_size=STEP,
                                adjoint=True, seminorm=False)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # end times away from 1, different per block, so that T's mapping shows
            for block in cnf_blocks(ours):
                block.odefunc.sqrt_end_time.fill_(0.8 + 0.4 * torch.rand((), generator=generator).item())
        theirs = helper.ffjord_odenvp(lib, (1, 28, 28), HIDDEN, 2, alpha=1e-6, atol=1e-5, rtol=1e-5, solver="rk4")
        helper.copy_multiscale_weights(ours, theirs)
        for block, cnf in zip(cnf_blocks(ours), helper.ffjord_cnfs(theirs)):
            cnf.solver_options["step_size"] = STEP * block.odefunc.end_time.item()
        x = torch.rand(BATCH, 1, 28, 28, generator=generator, dtype=torch.float64)
        yield helper, ours.double(), theirs.double(), x


def test_ffjord_odenvp_has_ours_parameter_count_and_chain(pair):
    helper, ours, theirs, _ = pair
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    assert len(helper.ffjord_cnfs(theirs)) == len(cnf_blocks(ours)) == 10


def test_same_latent_log_density_and_gradient_as_ffjord(pair):
    helper, ours, theirs, x = pair
    theirs.train()
    ours.zero_grad(set_to_none=True)
    theirs.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same Hutchinson probes: each block draws its own first, in chain order
    z_theirs, delta_theirs = theirs(x, torch.zeros(BATCH, 1, dtype=x.dtype))
    torch.manual_seed(0)
    out = ours(x)
    # the same latent (squeeze channel order, which half is factored out, the latent's layout) and
    # log-density (logit transform's log-det, the convs' time channel, T)
    torch.testing.assert_close(out["z"], z_theirs, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["delta_logp"], delta_theirs, rtol=1e-9, atol=1e-9)
    log_pz = (-0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype)) - 0.5 * z_theirs.pow(2)).sum(1)
    torch.manual_seed(0)
    assert torch.allclose(ours.log_prob(x), log_pz - delta_theirs.reshape(-1), rtol=1e-9)
    # the same gradient of bits/dim over every shared weight (plain adjoint on both sides, same grid)
    torch.manual_seed(0)
    loss_theirs = helper.ffjord_bits_per_dim(theirs, x)
    loss_theirs.backward()
    torch.manual_seed(0)
    loss_ours = bits_per_dim(ours(x))
    loss_ours.backward()
    assert loss_ours.item() == pytest.approx(loss_theirs.item(), rel=1e-9)
    mine, other = helper.multiscale_grads(ours, theirs)
    assert ((mine - other).norm() / other.norm()).item() < 1e-8
