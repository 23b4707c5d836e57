"""What a keep ratio counts: all parameters (the default, torchprune's ``net.size()``), all
parameters with FT's removed units' biases counted as kept (torchprune v2.2.0's FT), or only the
prunable layers' weights (``experiments.keepRatioOver``)."""
import numpy as np
import pytest
import torch
from torch import nn

import torchprune_flows as tf
from torchprune_flows.pruning import PruningError, count_parameters, import_state, prune
from torchprune_flows.runner.runs import RunFolder

#: the shipped toy spacing (experiment_configs/ffjord/toy/experiments.yaml)
SHIPPED_KEEPS = list(np.geomspace(0.80, 0.20, 20)) + list(np.linspace(0.18, 0.02, 9))


def _effective(module, name):
    """A parameter as the network uses it (``*_orig`` times its mask), read without our helpers."""
    if hasattr(module, name + "_orig"):
        return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    return getattr(module, name)


def _linear_weights(net):
    """(nonzero, total) entries of the weights of every nn.Linear of ``net``."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    nonzero = sum(int((_effective(m, "weight") != 0).sum()) for m in linears)
    return nonzero, sum(_effective(m, "weight").numel() for m in linears)


def _all_nonzero(net):
    """Nonzero entries of every parameter as the network uses it."""
    return sum(int((_effective(m, n[:-len("_orig")] if n.endswith("_orig") else n) != 0).sum())
               for m in net.modules() for n, _ in m.named_parameters(recurse=False))


def _units(net):
    """Hidden units of a one-hidden-layer toy flow whose weights are not all pruned."""
    first = next(m for m in net.modules() if isinstance(m, nn.Linear))
    return int((_effective(first, "weight") != 0).any(dim=1).sum())


def _gaussians_net(seed=0):
    torch.manual_seed(seed)
    return tf.build_network("ffjord_l2_h128_sigmoid_da", num_classes=2)  # 2 -> 128 -> 2, 642 parameters


def _closest_units(keep, per_unit, fixed, total):
    """The unit count k whose ``per_unit * k + fixed`` entries are closest to ``keep * total``
    (the larger k on a tie, as the pruning code breaks ties towards more kept entries)."""
    return min(range(1, 129), key=lambda k: (abs(per_unit * k + fixed - keep * total), -k))


@pytest.mark.parametrize("keep", [0.75, 0.18, 0.10, 0.06, 0.04])
def test_ft_counts_units_by_the_chosen_count_on_the_paper_gaussians_net(keep):
    # all parameters: a unit is 2 in-weights, its bias and 2 out-weights; the 2 output biases stay
    net = _gaussians_net()
    achieved = prune(net, "FT", keep, count_parameters(net))
    assert _units(net) == _closest_units(keep, 5, 2, 642)
    assert achieved == pytest.approx(_all_nonzero(net) / 642)
    # prunable weights: a unit is its 4 weights, biases are not counted at all
    net = _gaussians_net()
    achieved = prune(net, "FT", keep, count_parameters(net), over="prunable_weights")
    nonzero, total = _linear_weights(net)
    assert total == 512 and _units(net) == _closest_units(keep, 4, 0, 512)
    assert achieved == pytest.approx(nonzero / total)


#: hidden units torchprune v2.2.0's own FilterThresNet kept on its own ffjord_l2_h128_sigmoid_da
#: down the shipped cascade (steps 2, 13, 19, 20, 21, 28; docs/paper_gaps.md)
TORCHPRUNE_UNITS = {2: 87, 13: 21, 19: 2, 20: 1, 21: 1, 28: 1}


def test_counting_removed_biases_keeps_the_units_torchprune_v2_2_0_keeps_down_the_cascade():
    """A removed unit's 4 weights go but its bias stays counted, so 4 k + 130 entries count, and
    never fewer than one unit (keep 0.209); in a cascade too, where earlier masks zeroed biases."""
    net = _gaussians_net()
    for step, keep in enumerate(SHIPPED_KEEPS, start=1):
        achieved = prune(net, "FT", float(keep), 642, over="all_parameters_with_removed_unit_biases")
        units = _units(net)
        assert units == max(1, _closest_units(keep, 4, 130, 642)), step
        assert units == TORCHPRUNE_UNITS.get(step, units)
        assert achieved == pytest.approx((4 * units + 130) / 642)
        assert _all_nonzero(net) == 5 * units + 2  # the removed biases are zeroed all the same


def test_counting_removed_biases_changes_nothing_for_wt():
    for over in ("all_parameters", "all_parameters_with_removed_unit_biases"):
        net = _gaussians_net()
        achieved = prune(net, "WT", 0.3, 642, over=over)
        assert achieved == pytest.approx(_all_nonzero(net) / 642)
        assert abs(_all_nonzero(net) - 0.3 * 642) <= 2


def test_the_two_counts_differ_by_at_most_one_unit_over_the_shipped_gaussians_cascade():
    """On this net biases are 130 of 642 parameters, yet a unit carries the same share of both
    counts (5/642 against 4/512), so the shipped ratios keep the same units to within one."""
    diffs = []
    for keep in SHIPPED_KEEPS:
        units = []
        for over in ("all_parameters", "prunable_weights"):
            net = _gaussians_net()
            prune(net, "FT", float(keep), 642, over=over)
            units.append(_units(net))
        diffs.append(units[1] - units[0])
    assert set(diffs) <= {-1, 0, 1} and diffs.count(0) >= len(diffs) // 2
    assert diffs[SHIPPED_KEEPS.index(min(SHIPPED_KEEPS, key=lambda k: abs(k - 0.10)))] == 1  # 13 against 12


@pytest.mark.parametrize("keep", [0.7, 0.4, 0.15])
def test_wt_keeps_the_share_of_weights_and_counts_no_bias(keep):
    torch.manual_seed(1)
    net = tf.build_network("ffjord_l3_h16_tanh", num_classes=2)  # 2 -> 16 -> 16 -> 2: 320 weights
    achieved = prune(net, "WT", keep, count_parameters(net), over="prunable_weights")
    nonzero, total = _linear_weights(net)
    assert total == 320
    assert achieved == pytest.approx(nonzero / total)
    # one weight is the granularity, but a unit left without outgoing weights loses its row too
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    row = max([p.in_features for p, c in zip(linears[:-1], linears[1:])
               if (_effective(c, "weight") == 0).all(dim=0).any()], default=0)
    assert abs(nonzero - keep * total) <= 0.5 + row


def test_an_unknown_count_is_explained():
    with pytest.raises(PruningError, match="unknown keep-ratio count 'weights'; choose from all_parameters, "
                                           "all_parameters_with_removed_unit_biases, prunable_weights"):
        prune(_gaussians_net(), "FT", 0.5, 642, over="weights")


def test_the_config_key_reaches_the_pruning_of_a_cascade(tiny):
    # 2 -> 16 -> 2 with exact trace: 64 weights, 18 biases; FT at keep 0.6 keeps 10 units when
    # weights are counted (40 of 64: 0.625) but 9 when every parameter is (47 of 82: 0.573)
    tiny.cfg["experiments"].update(methods=["FT"], keepRatioOver="prunable_weights",
                                   spacing=[{"type": "manual", "values": [0.6]}])
    assert tiny.run() == 0
    net = import_state(tf.build_network(tiny.cfg["network"]["name"], num_classes=2),
                       RunFolder(tiny.path("out")).load_state("net0_rep0_FilterThresNet_00"))
    assert _linear_weights(net) == (40, 64) and _units(net) == 10
    assert _closest_units(0.6, 5, 2, 82) == 9


def test_a_bad_count_in_the_config_is_one_error_line(tiny, capsys):
    tiny.cfg["experiments"]["keepRatioOver"] = "weights"
    assert tiny.run() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: 'experiments.keepRatioOver' must be one of all_parameters, "
                   "all_parameters_with_removed_unit_biases, prunable_weights; got 'weights' (a string)"]


def test_torchprunes_runner_is_not_handed_a_count_it_does_not_know(tiny, capsys):
    from torchprune_flows.runner.cli import main

    tiny.cfg["training"].pop("datasetKwargs")
    tiny.cfg["experiments"]["keepRatioOver"] = "prunable_weights"
    assert main([tiny.write(), "--engine", "torchprune"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: experiments.keepRatioOver: prunable_weights only applies to our runner (torchprune's keep ratios "
        "count every parameter); drop it, or run without --engine torchprune"]


def test_a_config_without_the_key_resolves_as_before():
    """Run folders store the resolved config and only resume with an equal one: the default must
    not add the key, or every run started before it existed would be refused."""
    from torchprune_flows.runner.config import resolve_config

    from conftest import REPO_ROOT

    cfg = resolve_config(f"{REPO_ROOT}/experiment_configs/ffjord/gaussians.yaml").cfg
    assert "keepRatioOver" not in cfg["experiments"]
