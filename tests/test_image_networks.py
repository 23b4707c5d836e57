"""Multiscale image flows: parameter counts, logit/squeeze layers, bits/dim, FT/WT on conv flows."""
import os

import numpy as np
import pytest
import torch

import torchprune_flows as tf
from conftest import SHARED_DATA
from torchprune_flows.cnf import cnf_blocks, nfe_counts
from torchprune_flows.cnf.fixed_layers import LogitTransform, Squeeze
from torchprune_flows.networks.multiscale import MultiscaleFlow, number_of_scales
from torchprune_flows.objectives import NLLBitsLoss
from torchprune_flows.pruning import count_parameters, prune

MNIST_DIR = os.path.join(SHARED_DATA, "mnist")
LOOSE = dict(atol=1e-3, rtol=1e-3)


def _tiny(name="ffjord_multiscale_mnist", seed=0, **kwargs):
    torch.manual_seed(seed)
    return tf.build_network(name, num_classes=10, hidden=(8, 8, 8), **{**LOOSE, **kwargs})


@pytest.mark.parametrize("name,channels,count,scales,blocks", [
    ("ffjord_multiscale_mnist", 1, 800646, 3, 10), ("ffjord_multiscale_cifar", 3, 1358882, 4, 14)])
def test_paper_image_flows_have_the_reference_parameter_counts(name, channels, count, scales, blocks):
    net = tf.build_network(name, num_classes=10, num_in_channels=channels)
    assert isinstance(net, MultiscaleFlow)
    assert count_parameters(net) == count
    assert len(net.chain) == scales and len(cnf_blocks(net)) == blocks
    for block in cnf_blocks(net):
        assert (block.solver.method, block.solver.atol, block.solver.rtol, block.solver.adjoint) == (
            "dopri5", 1e-5, 1e-5, True)
        convs = [layer.conv for layer in block.vector_field.layers]
        assert [c.kernel_size for c in convs] == [(3, 3)] * 4
        assert [c.out_channels for c in convs[:3]] == [64, 64, 64]
        assert convs[0].in_channels == convs[-1].out_channels  # data channels; t has its own conv
        assert [layer.time.in_channels for layer in block.vector_field.layers] == [1] * 4


def test_number_of_scales():
    assert (number_of_scales(28, 28), number_of_scales(32, 32), number_of_scales(8, 8)) == (3, 4, 2)


def test_logit_transform_log_det_and_inverse():
    layer = LogitTransform(alpha=1e-6)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    y, delta = layer(x, torch.zeros(3, dtype=torch.float64))
    derivative = torch.autograd.grad(y.sum(), x)[0]  # elementwise map: the Jacobian is diagonal
    assert torch.allclose(-delta, derivative.log().reshape(3, -1).sum(1), atol=1e-9)
    back, delta_back = layer(y, delta, reverse=True)
    assert torch.allclose(back, x, atol=1e-9) and torch.allclose(delta_back, torch.zeros(3, dtype=torch.float64))


def test_squeeze_moves_each_2x2_patch_into_channels():
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    y, delta = Squeeze()(x, torch.zeros(2))
    assert y.shape == (2, 8, 2, 2)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[:, 4 * c + 2 * i + j], x[:, c, i::2, j::2])
    assert torch.equal(Squeeze()(y, delta, reverse=True)[0], x)


def test_bits_per_dim_of_a_flow_with_zero_vector_fields():
    """f = 0: the flow is the logit transform and permutations, so bits/dim has a closed form."""
    net = _tiny()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "sqrt_end_time" not in name:
                p.zero_()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    net = net.double()
    alpha = 1e-6
    s = alpha + (1 - 2 * alpha) * x.numpy().reshape(4, -1)
    y = np.log(s) - np.log1p(-s)
    log_p = (-0.5 * y ** 2 - 0.5 * np.log(2 * np.pi) + np.log(1 - 2 * alpha) - np.log(s) - np.log1p(-s)).sum(1)
    expected = np.mean(-(log_p / 784 - np.log(256)) / np.log(2))
    assert NLLBitsLoss()(net(x)).item() == pytest.approx(expected, rel=1e-6)


def test_forward_backward_on_real_mnist_test_images():
    if not os.path.exists(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("real MNIST test split not available")
    import shutil

    from torchprune_flows.runner.transforms import RandomNoise
    from torchprune_flows.data.images import MNIST
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        raw = os.path.join(root, "MNIST", "raw")
        os.makedirs(raw)
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            shutil.copy(os.path.join(MNIST_DIR, name), raw)
        data = MNIST(root=root, split="test", num_test=6)
        torch.manual_seed(0)
        x = torch.stack([RandomNoise(255.0)(data[i][0]) for i in range(6)])
    net = _tiny()
    loss = NLLBitsLoss()(net(x))
    loss.backward()
    nfe = nfe_counts(net)
    assert torch.isfinite(loss) and 1.0 < loss.item() < 30.0
    assert nfe["forward"] > 0 and nfe["backward"] > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    samples = net.sample(3)
    assert samples.shape == (3, 1, 28, 28) and torch.isfinite(samples).all()


def test_sampling_inverts_the_multiscale_flow():
    net = _tiny("ffjord_multiscale_cifar", atol=1e-6, rtol=1e-6, image_size=8)
    x = torch.rand(2, 3, 8, 8) * 0.9 + 0.05
    with torch.no_grad():
        z = net(x)["z"]
    assert z.shape == (2, 3 * 8 * 8)
    assert torch.allclose(net.sample(2, z=z), x, atol=1e-3)


def _time_weights(net):
    return {id(layer.conv): layer.time.weight.detach().clone()
            for block in cnf_blocks(net) for layer in block.vector_field.layers}


@pytest.mark.parametrize("method", ["FT", "WT"])
def test_pruning_a_conv_flow_keeps_time_weights_and_output_channels(method):
    net = _tiny(image_size=8)
    before = _time_weights(net)
    original = count_parameters(net)
    for keep in (0.5, 0.25):
        prune(net, method, keep, original)
    for block in cnf_blocks(net):
        layers = block.vector_field.layers
        convs = [layer.conv for layer in layers]
        last = convs[-1]
        assert (last.weight.reshape(last.out_channels, -1) != 0).any(dim=1).all()  # every output channel stays
        assert torch.equal(layers[-1].time.weight, before[id(last)])
        for layer in layers:
            conv, time = layer.conv, layer.time.weight
            alive = (conv.weight != 0).reshape(conv.out_channels, -1).any(dim=1)
            # every filter that still reads data still reads time, unchanged (torchprune's defect 1);
            # a removed filter's time weights go with it
            assert torch.equal(time[alive], before[id(conv)][alive])
            assert not time[~alive].any()
        if method == "FT":
            assert any(((c.weight == 0).reshape(c.out_channels, -1).all(dim=1)).any() for c in convs[:-1])
