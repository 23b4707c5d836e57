"""Built-in networks: parameter counts from the reference, name families, suffixes, errors."""
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.cnf import cnf_blocks
from torchprune_flows.registry import NETWORKS, UnknownNameError


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name,count", [("ffjord_l2_h128_sigmoid_da", 642), ("ffjord_l4_h64_sigmoid_da", 8642),
                                        ("cnf_l2_h128_sigmoid_da", 642), ("node_l2_h128_tanh_da", 642)])
def test_parameter_counts_match_the_reference(name, count):
    assert n_params(tf.build_network(name, num_classes=2)) == count


def test_depth_width_shapes_count_like_an_mlp():
    for layers, hidden in [(8, 37), (6, 45), (3, 90), (2, 1700)]:
        widths = [2] + [hidden] * (layers - 1) + [2]
        expected = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
        assert n_params(tf.build_network(f"ffjord_l{layers}_h{hidden}_softplus", num_classes=2)) == expected


@pytest.mark.parametrize("suffix,method,adjoint,tol", [
    ("_da", "dopri5", True, 1e-5), ("_da_high_tol", "dopri5", True, 1e-4), ("_rk4_autograd", "rk4", False, 1e-5),
    ("_euler_adjoint", "euler", True, 1e-5), ("_dopri_autograd", "dopri5", False, 1e-5)])
def test_suffixes_select_the_solver(suffix, method, adjoint, tol):
    (block,) = cnf_blocks(tf.build_network("ffjord_l2_h8_tanh" + suffix, num_classes=2))
    assert (block.solver.method, block.solver.adjoint, block.solver.atol, block.solver.rtol) == (method, adjoint, tol, tol)


def test_family_kinds_and_divergence():
    assert cnf_blocks(tf.build_network("ffjord_l2_h8_tanh_da", num_classes=2))[0].odefunc.divergence == "hutchinson"
    assert cnf_blocks(tf.build_network("cnf_l2_h8_tanh_da", num_classes=2))[0].odefunc.divergence == "exact"
    node = tf.build_network("node_l2_h8_tanh_da", num_classes=2)
    assert cnf_blocks(node)[0].solver.atol == 1e-4
    assert node(torch.randn(5, 2)).shape == (5, 2)


def test_solver_backend_is_selectable_by_kwarg():
    (block,) = cnf_blocks(tf.build_network("ffjord_l2_h8_tanh_da", num_classes=2, backend="torchdyn"))
    assert block.solver.backend == "torchdyn"


def test_bad_suffix_and_unknown_names_are_explained():
    with pytest.raises(ValueError, match="unknown network suffix '_dopri9'.*_da"):
        tf.build_network("ffjord_l2_h8_tanh_dopri9", num_classes=2)
    with pytest.raises(ValueError, match="unknown activation 'sigmod'.*sigmoid"):
        tf.build_network("ffjord_l2_h8_sigmod_da", num_classes=2)
    with pytest.raises(UnknownNameError, match="did you mean.*ffjord_l"):
        NETWORKS.get("fjord_l2_h8_tanh")
    with pytest.raises(UnknownNameError, match="did you mean ToyGaussians"):
        tf.build_dataset("ToyGausians")


def test_flow_output_and_sampling_shapes():
    net = tf.build_network("ffjord_l2_h8_tanh_high_tol", num_classes=2)
    out = net(torch.randn(7, 2))
    assert out["z"].shape == (7, 2) and out["delta_logp"].shape == (7, 1)
    assert net.sample(5).shape == (5, 2)
