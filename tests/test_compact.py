"""Compaction: FT-pruned flows made physically smaller compute the same log-densities and samples."""
import pytest
import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.cnf.cnf import with_divergence
from torchprune_flows.pruning import count_nonzero, count_parameters, get_masks, prune

SMALL_IMAGE = dict(num_classes=10, num_in_channels=1, image_size=8, hidden=(16, 16), blocks=1, atol=1e-3, rtol=1e-3)

#: (registry name, factory keywords, data shape, divergence used to compare: exact where D is small)
CASES = [
    ("ffjord_l4_h64_sigmoid_da", dict(num_classes=2), (2,), "exact"),
    ("cnf_l3_h32_softplus_high_tol", dict(num_classes=2), (2,), None),
    ("ffjord_l1_hm4_f3_softplus_high_tol", dict(num_classes=6), (6,), None),  # Hutchinson, same seed
    ("ffjord_multiscale_mnist", SMALL_IMAGE, (1, 8, 8), None),
]
IDS = [case[0] for case in CASES]


def _build(name, kwargs, seed=0):
    torch.manual_seed(seed)
    return tf.build_network(name, **kwargs)


def _data(shape, n=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    if len(shape) == 3:  # images in (0, 1)
        return torch.rand((n, *shape), generator=generator) * 0.9 + 0.05
    return torch.randn((n, *shape), generator=generator)


def _log_prob(net, x, divergence, seed=2):
    torch.manual_seed(seed)  # the same Hutchinson probes for both nets
    with torch.no_grad(), with_divergence(net, divergence):
        return net.log_prob(x)


def _weight_entries(net):
    return sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def _layer_shapes(net):
    return [tuple(m.weight.shape) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("keep", [0.5, 0.2])
@pytest.mark.parametrize("name,kwargs,shape,divergence", CASES, ids=IDS)
def test_ft_compacted_flow_gives_the_same_log_density_with_fewer_parameters(name, kwargs, shape, divergence, keep):
    net = _build(name, kwargs)
    prune(net, "FT", keep, count_parameters(net))
    compact = tf.compact(net)
    # float64: the same function to rounding (float32 rounding alone differed by 2.4e-5 relative
    # on the image flow on an AMD EPYC machine, 1e-13 in float64)
    x = _data(shape).double()
    expected, got = _log_prob(net.double(), x, divergence), _log_prob(compact.double(), x, divergence)
    assert torch.allclose(got, expected, rtol=1e-9, atol=0), (got - expected).abs().max()
    # the compact net's parameters are exactly the nonzero structure of the pruned one
    assert count_parameters(compact) == count_nonzero(net) < count_parameters(net)
    assert _weight_entries(compact) < _weight_entries(net)


@pytest.mark.parametrize("name,kwargs,shape,divergence", CASES, ids=IDS)
def test_ft_compacted_flow_draws_the_same_samples(name, kwargs, shape, divergence):
    net = _build(name, kwargs)
    prune(net, "FT", 0.2, count_parameters(net))
    compact = tf.compact(net)
    expected = net.sample(8, generator=torch.Generator().manual_seed(3))
    got = compact.sample(8, generator=torch.Generator().manual_seed(3))
    assert got.shape == expected.shape == (8, *shape)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6), (got - expected).abs().max()


@pytest.mark.parametrize("name,kwargs,shape,divergence", CASES, ids=IDS)
def test_compacting_an_unpruned_flow_changes_nothing(name, kwargs, shape, divergence):
    net = _build(name, kwargs)
    compact = tf.compact(net)
    assert compact is not net
    assert _layer_shapes(compact) == _layer_shapes(net)
    state, compact_state = net.state_dict(), compact.state_dict()
    assert state.keys() == compact_state.keys()
    assert all(torch.equal(state[k], compact_state[k]) for k in state)


def test_compact_removes_masks_and_leaves_the_pruned_net_as_it_was():
    net = _build("ffjord_l1_hm4_f3_softplus_high_tol", dict(num_classes=6))
    prune(net, "FT", 0.3, count_parameters(net))
    masks, shapes = get_masks(net), _layer_shapes(net)
    compact = tf.compact(net)
    assert get_masks(compact) == {}
    assert not any(n.endswith("_orig") for n, _ in compact.named_parameters())
    assert not any(m._forward_pre_hooks for m in compact.modules())
    assert _layer_shapes(net) == shapes and get_masks(net).keys() == masks.keys()
    assert all(torch.equal(get_masks(net)[k], masks[k]) for k in masks)


def test_compact_cuts_hidden_units_and_their_time_companions_consistently():
    net = _build("ffjord_l1_hm4_f3_softplus_high_tol", dict(num_classes=6))
    prune(net, "FT", 0.2, count_parameters(net))
    compact = tf.compact(net)
    for block in compact.chain:
        first, last = block.vector_field.layers
        hidden = first.main.out_features
        assert 1 <= hidden < 24
        assert first.gate.weight.shape == (hidden, 1) and first.gate.bias.shape == (hidden,)
        assert first.shift.weight.shape == (hidden, 1)
        assert last.main.weight.shape == (6, hidden)  # the block keeps its data dimension
        assert first.main.in_features == 6


def test_compacted_flow_trains_with_the_same_gradients_on_kept_weights():
    net = _build("ffjord_l1_hm4_f3_softplus_high_tol", dict(num_classes=6))
    prune(net, "FT", 0.3, count_parameters(net))
    compact = tf.compact(net)
    x = _data((6,), n=16)
    losses = []
    for model in (net, compact):
        torch.manual_seed(4)
        loss = -model.log_prob(x).mean()
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert all(p.grad is not None for p in compact.parameters() if p.requires_grad)
    # the end times are not pruned: their gradients agree
    for a, b in zip(net.chain, compact.chain):
        ga, gb = a.odefunc.sqrt_end_time.grad, b.odefunc.sqrt_end_time.grad
        assert torch.allclose(ga, gb, rtol=1e-3, atol=1e-6)


def test_a_pruned_net_compacts_straight_after_a_training_step():
    """After a training forward torch's pruned attributes (``weight = weight_orig * mask``) are
    autograd graph nodes, which deepcopy refuses; compact refreshes them first (a torchrun rank
    that writes no checkpoint compacts in that state) and uses the weights after the step."""
    net = _build("ffjord_l1_hm4_f3_softplus_high_tol", dict(num_classes=6))
    prune(net, "FT", 0.3, count_parameters(net))
    x = _data((6,), n=16)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.manual_seed(4)
    (-net.log_prob(x).mean()).backward()
    optimizer.step()
    compact = tf.compact(net)
    assert torch.allclose(_log_prob(compact, x, "exact"), _log_prob(net, x, "exact"), rtol=1e-4, atol=1e-5)


def test_wt_compacted_flow_keeps_its_function():
    """WT removes only the units it left without outputs; the rest stays dense (and zero-filled)."""
    net = _build("ffjord_l4_h64_sigmoid_da", dict(num_classes=2))
    prune(net, "WT", 0.1, count_parameters(net))
    compact = tf.compact(net)
    x = _data((2,))
    expected, got = _log_prob(net, x, "exact"), _log_prob(compact, x, "exact")
    assert torch.allclose(got, expected, rtol=1e-5, atol=0)
    assert count_nonzero(compact) == count_nonzero(net) <= count_parameters(compact) <= count_parameters(net)


@pytest.mark.parametrize("name,dim", [("ffjord_l1_hm4_f3_softplus_high_tol", 6), ("ffjord_l4_h64_sigmoid_da", 2)])
def test_write_back_round_trips_trained_compact_weights(name, dim):
    """Train compact, store in the original architecture: compacting again gives the same net."""
    from torchprune_flows.pruning import get_masks, write_back

    torch.manual_seed(0)
    net = tf.build_network(name, num_classes=dim)
    prune(net, "FT", 0.3, count_parameters(net))
    masks = {k: v.clone() for k, v in get_masks(net).items()}
    small = tf.compact(net)
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "training"
    write_back(small, net)
    assert {k: v.tolist() for k, v in get_masks(net).items()} == {k: v.tolist() for k, v in masks.items()}
    again = tf.compact(net)
    for (n1, a), (n2, b) in zip(small.named_parameters(), again.named_parameters()):
        assert n1 == n2 and torch.equal(a, b), n1


def test_the_runner_retrains_ft_compact_and_stores_the_original_architecture(tiny, monkeypatch):
    from torchprune_flows.runner import pipeline
    from torchprune_flows.runner.runs import RunFolder

    sizes, original_train = [], pipeline.train

    def recording_train(net, *args, **kwargs):
        sizes.append((sum(p.numel() for p in net.parameters()), bool(get_masks(net))))
        return original_train(net, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train", recording_train)
    tiny.cfg["experiments"]["methods"] = ["FilterThresNet", "ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    tiny.cfg["training"]["numEpochs"] = 1
    assert tiny.run() == 0
    (reference, _), (ft_size, ft_masked), (wt_size, wt_masked) = sizes
    assert ft_size < reference and not ft_masked  # FT retrains physically smaller
    assert wt_size == reference and wt_masked  # WT retrains masked
    run = RunFolder.open(tiny.path("out"))
    net = run.load_network(run.select("FT", 0.5))  # the checkpoint loads into the full architecture
    assert sum(p.numel() for p in net.parameters()) == reference and get_masks(net)
    assert count_nonzero(net) == run.steps[run.select("FT", 0.5)]["params"]
