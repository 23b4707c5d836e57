"""Tabular FFJORD flows: parameter counts, concatsquash time conditioning, training, FT/WT, sampling."""
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.cnf import cnf_blocks, nfe_counts
from torchprune_flows.networks.concatsquash import ConcatSquashLinear
from torchprune_flows.networks.tabular import TabularFlow
from torchprune_flows.pruning import count_parameters, prunable_layers, prune
from torchprune_flows.pruning.masks import refresh_pruned_tensors

#: (dataset, D, network) of the paper's tabular flows (README, "Networks, data, objectives"), with
#: the parameter counts to match
PAPER_NETWORKS = [
    ("POWER", 6, "ffjord_l3_hm10_f5_tanh", 43325),
    ("GAS", 8, "ffjord_l3_hm20_f5_tanh", 278565),
    ("HEPMASS", 21, "ffjord_l2_hm10_f10_softplus", 546850),
    ("MINIBOONE", 43, "ffjord_l2_hm20_f1_softplus", 820613),
    ("BSDS300", 63, "ffjord_l3_hm20_f2_softplus", 6698666),
]
LOOSE = dict(atol=1e-3, rtol=1e-3)


def _small(name, dim, seed=0, **solver):
    """The paper's shape (depth, blocks, activation) with hidden width 2*D and the given solver."""
    nhidden, _, blocks, act = name.split("_")[1:]
    torch.manual_seed(seed)
    return tf.build_network(f"ffjord_{nhidden}_hm2_{blocks}_{act}", num_classes=dim, **(solver or LOOSE))


@pytest.mark.parametrize("dataset,dim,name,count", PAPER_NETWORKS)
def test_paper_networks_have_the_reference_parameter_counts(dataset, dim, name, count):
    net = tf.build_network(name, num_classes=dim)
    assert isinstance(net, TabularFlow)
    assert count_parameters(net) == count


def test_paper_solver_and_structure():
    net = tf.build_network("ffjord_l3_hm10_f5_tanh", num_classes=6)
    blocks = cnf_blocks(net)
    assert len(blocks) == 5
    for block in blocks:
        spec = block.solver
        assert (spec.method, spec.atol, spec.rtol, spec.adjoint) == ("dopri5", 1e-8, 1e-6, True)
        assert block.odefunc.divergence == "hutchinson" and block.odefunc.probe_kind == "gaussian"
        assert isinstance(block.odefunc.sqrt_end_time, torch.nn.Parameter)
        assert block.odefunc.end_time.item() == pytest.approx(1.0)
        widths = [(layer.main.in_features, layer.main.out_features) for layer in block.vector_field.layers]
        assert widths == [(6, 60), (60, 60), (60, 60), (60, 6)]


def test_tabular_and_toy_families_resolve_separately():
    assert isinstance(tf.build_network("ffjord_l2_hm2_f1_tanh", num_classes=3), TabularFlow)
    assert not isinstance(tf.build_network("ffjord_l2_h8_tanh", num_classes=2), TabularFlow)
    with pytest.raises(ValueError, match="outputSize"):
        tf.build_network("ffjord_l2_hm2_f1_tanh")


def test_concatsquash_layer_is_gate_times_linear_plus_shift():
    torch.manual_seed(0)
    layer = ConcatSquashLinear(3, 4)
    x, t = torch.randn(5, 3), 0.7
    w, b = layer.main.weight, layer.main.bias
    a, c, s = layer.gate.weight.view(-1), layer.gate.bias, layer.shift.weight.view(-1)
    expected = (x @ w.T + b) * torch.sigmoid(a * t + c) + s * t
    assert torch.allclose(layer(t, x), expected, atol=1e-6)
    assert layer.shift.bias is None
    # the field depends on time, unlike the autonomous toy fields
    assert not torch.allclose(layer(0.1, x), layer(0.9, x))


@pytest.mark.parametrize("dataset,dim,name,count", PAPER_NETWORKS)
def test_a_training_step_of_every_paper_shape(dataset, dim, name, count):
    net = _small(name, dim)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(32, dim) * 0.5 + 0.3
    loss = -net.log_prob(x).mean()
    loss.backward()
    nfe = nfe_counts(net)
    assert torch.isfinite(loss)
    assert nfe["forward"] >= 6 * len(cnf_blocks(net)) and nfe["backward"] > 0
    blocks = cnf_blocks(net)
    # gradients reach the pruned-never time layers and every block's learnable end time
    for block in blocks:
        assert block.odefunc.sqrt_end_time.grad.abs() > 0
        assert block.vector_field.layers[0].gate.weight.grad.abs().sum() > 0
        assert block.vector_field.layers[0].shift.weight.grad.abs().sum() > 0
    opt.step()
    assert torch.isfinite(-net.log_prob(x).mean())


def test_learnable_end_time_scales_the_flow():
    """Doubling T of a one-block flow doubles log-det of a field that is linear in z for all t."""
    torch.manual_seed(1)
    net = tf.build_network("ffjord_l0_hm1_f1_tanh", num_classes=3, atol=1e-8, rtol=1e-8)
    (block,) = cnf_blocks(net)
    layer = block.vector_field.layers[0]
    with torch.no_grad():  # f(t, z) = A z * sigmoid(c) with a time-independent gate; div = sum_i A_ii sigmoid(c_i)
        layer.gate.weight.zero_()
        layer.shift.weight.zero_()
    block.odefunc.divergence = "exact"
    x = torch.randn(4, 3)
    trace = (torch.diagonal(layer.main.weight) * torch.sigmoid(layer.gate.bias)).sum().detach()
    d1 = net(x)["delta_logp"]
    with torch.no_grad():
        block.odefunc.sqrt_end_time.fill_(2 ** 0.5)
    d2 = net(x)["delta_logp"]
    assert torch.allclose(d1, -trace * 1.0, atol=1e-5)
    assert torch.allclose(d2, -trace * 2.0, atol=1e-5)


def _time_tensors(net):
    """Per concatsquash layer: its main Linear and its time tensors (gate weight and bias, shift)."""
    refresh_pruned_tensors(net)
    return [(layer.main, [t.detach().clone() for t in (layer.gate.weight, layer.gate.bias, layer.shift.weight)])
            for block in cnf_blocks(net) for layer in block.vector_field.layers]


@pytest.mark.parametrize("method", ["FT", "WT"])
def test_pruning_never_touches_block_outputs_or_time_layers(method):
    net = tf.build_network("ffjord_l2_hm4_f3_tanh", num_classes=5)
    before = _time_tensors(net)
    end_times = [p.detach().clone() for n, p in net.named_parameters() if "sqrt_end_time" in n]
    original = count_parameters(net)
    for keep in (0.6, 0.3, 0.15):
        prune(net, method, keep, original)
    assert len(prunable_layers(net)) == 3 * 3  # only the main Linear of every layer
    assert all(isinstance(m, torch.nn.Linear) and m.in_features > 1 for m in prunable_layers(net))
    assert all(torch.equal(a, b) for a, b in zip(
        end_times, [p for n, p in net.named_parameters() if "sqrt_end_time" in n]))
    for (main, old), (_, new) in zip(before, _time_tensors(net)):
        alive = (main.weight != 0).any(dim=1) | (main.bias != 0)  # removal zeroes both
        for a, b in zip(old, new):  # time weights are never scored; a removed unit's go with it
            assert torch.equal(b.reshape(len(alive), -1)[alive], a.reshape(len(alive), -1)[alive])
            assert not b.reshape(len(alive), -1)[~alive].any()
    for block in cnf_blocks(net):
        last = block.vector_field.layers[-1].main
        hidden = [layer.main for layer in block.vector_field.layers[:-1]]
        if method == "FT":
            # every block keeps all D velocity components: each output row still reads something
            assert (last.weight != 0).any(dim=1).all()
            assert (last.bias != 0).all()
            # hidden units were removed in every block, rows and biases together
            for layer in hidden:
                dead = (layer.weight == 0).all(dim=1)
                assert dead.any()
                assert (layer.bias[dead] == 0).all()
        else:
            assert sum(int((m.weight == 0).sum()) for m in hidden + [last]) > 0


def test_ft_pruned_flow_still_depends_on_time():
    net = tf.build_network("ffjord_l1_hm4_f1_tanh", num_classes=4)
    prune(net, "FT", 0.3, count_parameters(net))
    field = cnf_blocks(net)[0].vector_field
    z = torch.randn(6, 4)
    assert not torch.allclose(field(0.1, z), field(0.9, z))


def test_sampling_inverts_the_density_direction():
    net = _small("ffjord_l2_hm20_f2_softplus", 4, atol=1e-7, rtol=1e-7)
    z = torch.randn(64, 4)
    samples = net.sample(64, z=z)
    assert samples.shape == (64, 4) and torch.isfinite(samples).all()
    with torch.no_grad():
        back = net(samples)["z"]
    assert torch.allclose(back, z, atol=1e-4)
    generator = torch.Generator().manual_seed(3)
    again = net.sample(10, generator=generator)
    assert again.shape == (10, 4)
    assert torch.equal(again, net.sample(10, generator=torch.Generator().manual_seed(3)))
