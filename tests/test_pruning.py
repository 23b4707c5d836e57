"""WT / FT pruning: keep-ratio accuracy, torchprune's semantics, masks through retraining."""
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.pruning import (PruningError, canonical_method, count_nonzero, count_parameters,
                                      effective_tensors, export_state, get_masks, import_state, prunable_layers,
                                      prune)


def _net(name="ffjord_l4_h64_sigmoid_da", seed=0):
    torch.manual_seed(seed)
    return tf.build_network(name, num_classes=2)


def _linears(net):
    return prunable_layers(net)


def _nonzero_entries(net):
    """Nonzero entries of every parameter as the network uses it (``*_orig`` times its mask),
    counted without the pruning package's own helpers."""
    total = 0
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            if name.endswith("_orig"):
                param = param * getattr(module, name[:-len("_orig")] + "_mask")
            total += int((param != 0).sum())
    return total


def test_wt_reaches_the_keep_ratio_within_half_a_percent():
    net = _net()
    original = count_parameters(net)
    assert _nonzero_entries(net) == original  # dense: every entry is nonzero
    for keep in [0.8, 0.5, 0.2, 0.1, 0.05]:
        achieved = prune(net, "WT", keep, original)
        assert achieved == _nonzero_entries(net) / original
        assert abs(achieved - keep) / keep <= 0.005
    # at 2 % (173 of 8,642 entries) a dead unit's row is coarser than 0.5 %: within one row
    achieved = prune(net, "WT", 0.02, original)
    assert abs(achieved - 0.02) * original <= 64 + 1


def test_wt_uses_one_global_magnitude_threshold():
    net = _net()
    dense = {id(l): l.weight.detach().clone() for l in _linears(net)}
    prune(net, "ThresNet", 0.3, count_parameters(net))
    layers = _linears(net)
    kept = torch.cat([dense[id(l)][l.weight != 0].abs() for l in layers])
    # weights pruned by the threshold (not removed with a dead unit's row)
    pruned = []
    for l in layers:
        alive_rows = l.weight.ne(0).any(dim=1)
        pruned.append(dense[id(l)][alive_rows][l.weight[alive_rows] == 0].abs())
    assert kept.min() >= torch.cat(pruned).max()


def test_wt_zeroes_biases_only_of_units_that_no_longer_feed_anything():
    net = _net()
    prune(net, "WT", 0.05, count_parameters(net))
    layers = _linears(net)
    for producer, consumer in zip(layers[:-1], layers[1:]):
        dead = ~consumer.weight.ne(0).any(dim=0)
        assert torch.equal(producer.bias == 0, dead)
    assert layers[-1].bias.ne(0).all()


def test_ft_keeps_output_units_and_the_same_fraction_per_layer():
    net = _net()
    original = count_parameters(net)
    achieved = prune(net, "FT", 0.3, original)
    layers = _linears(net)
    hidden_kept = [int(l.weight.ne(0).any(dim=1).sum()) for l in layers[:-1]]
    assert max(hidden_kept) - min(hidden_kept) <= 1
    assert layers[-1].weight.ne(0).any(dim=1).all() and layers[-1].bias.ne(0).all()
    # the achieved ratio is within one unit (its row, bias and next-layer column) of the target
    unit = max(l.weight.shape[1] + 1 + n.weight.shape[0] for l, n in zip(layers[:-1], layers[1:]))
    assert abs(achieved - 0.3) * original <= unit


def test_ft_removes_the_weakest_units_with_their_consumer_columns():
    net = _net()
    layers = _linears(net)
    l1 = [l.weight.detach().abs().sum(dim=1).clone() for l in layers]
    prune(net, "FilterThresNet", 0.5, count_parameters(net))
    for i, (producer, consumer) in enumerate(zip(layers[:-1], layers[1:])):
        removed = ~producer.weight.ne(0).any(dim=1)
        assert removed.any()
        assert l1[i][removed].max() <= l1[i][~removed].min()
        assert producer.bias[removed].eq(0).all()
        assert consumer.weight[:, removed].eq(0).all()


@pytest.mark.parametrize("method", ["WT", "FT"])
def test_cascaded_masks_only_grow_and_stay_zero_through_retraining(method):
    net = _net("ffjord_l2_h32_tanh_high_tol")
    original = count_parameters(net)
    prune(net, method, 0.6, original)
    first = get_masks(net)
    prune(net, method, 0.3, original)
    second = get_masks(net)
    for key, mask in first.items():
        assert not (second[key] & ~mask).any()
    opt = torch.optim.AdamW(net.parameters(), lr=0.05, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        out = net(torch.randn(64, 2))
        (0.5 * out["z"].pow(2).sum(1) + out["delta_logp"].reshape(-1)).mean().backward()
        opt.step()
    tensors = effective_tensors(net)
    for key, mask in second.items():
        assert tensors[key][~mask].eq(0).all()
    assert count_nonzero(net) / original == pytest.approx(prune(net, method, 0.3, original))


def test_export_import_round_trip_preserves_function_and_masks():
    net = _net("ffjord_l2_h16_tanh_high_tol")
    prune(net, "WT", 0.4, count_parameters(net))
    state = export_state(net)
    assert not any(k.endswith(("_orig", "_mask")) for k in state["state_dict"])
    copy = import_state(_net("ffjord_l2_h16_tanh_high_tol", seed=1), state)
    x = torch.randn(16, 2)
    torch.manual_seed(0)
    a = net(x)["z"]
    torch.manual_seed(0)
    b = copy(x)["z"]
    assert torch.allclose(a, b)
    assert count_nonzero(copy) == count_nonzero(net)


def test_bad_ratios_and_methods_are_explained():
    net = _net("ffjord_l2_h8_tanh")
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(PruningError, match="outside \\(0, 1\\]"):
            prune(net, "WT", bad, count_parameters(net))
    with pytest.raises(PruningError, match="did you mean ThresNet"):
        canonical_method("ThresNett")
    assert canonical_method("FT") == "FilterThresNet"


def _flow_without_chains(hidden=16):
    """A PrunableMixin flow whose vector field (two Linear layers) declares no structured chains."""
    from torch import nn

    from torchprune_flows.cnf import CNF, FlowNetwork
    from torchprune_flows.pruning import PrunableMixin

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(2, hidden), nn.Linear(hidden, 2)

        def forward(self, t, z):
            return self.fc2(torch.tanh(self.fc1(z)))

    class Flow(PrunableMixin, FlowNetwork):
        def __init__(self):
            super().__init__([CNF(Field(), divergence="exact")], (2,))

    torch.manual_seed(0)
    return Flow()


def test_a_flow_declaring_no_chains_prunes_all_its_plain_layers_as_one_chain():
    net = _flow_without_chains()
    field = net.chain[0].vector_field
    assert _linears(net) == [field.fc1, field.fc2]
    assert net.is_compressible(field.fc1) and net.is_compressible(field.fc2)
    original = count_parameters(net)
    achieved = prune(net, "WT", 0.5, original)
    assert achieved == _nonzero_entries(net) / original and abs(achieved - 0.5) <= 0.05
    net = _flow_without_chains()
    prune(net, "FT", 0.5, original)
    rows = (field := net.chain[0].vector_field).fc1.weight.abs().sum(1)
    assert 0 < int((rows == 0).sum()) < 16  # hidden units removed
    assert (field.fc2.weight.abs().sum(1) != 0).all()  # the flow's outputs kept


def test_a_flow_without_prunable_layers_is_explained():
    net = _flow_without_chains()
    net.is_compressible = lambda module: False
    with pytest.raises(PruningError, match="has no prunable layers"):
        prune(net, "WT", 0.5, count_parameters(net))
