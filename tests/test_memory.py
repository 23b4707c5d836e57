"""Peak memory of a call (torchprune_flows.analysis.memory), the benchmarks' memory column:
exact on a known allocation pattern, and the adjoint's O(1) against backprop's O(steps) on a flow."""
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.analysis.memory import peak_memory_mib
from torchprune_flows.cnf import set_solver


def test_peak_of_a_known_allocation_pattern():
    def allocate():
        a = torch.empty(1024, 1024)  # 4 MiB
        b = torch.empty(512, 1024)  # 2 MiB, 6 alive
        del a  # 2 alive
        c = torch.empty(2048, 1024)  # 8 MiB, 10 alive: the peak
        return b, c

    kept = torch.empty(4096, 1024)  # alive before the call: does not count
    assert peak_memory_mib(allocate) == pytest.approx(10.0)
    assert kept.numel() == 4096 * 1024


def _pass_peak(net, x, steps, adjoint):
    set_solver(net, method="rk4", step_size=1.0 / steps, adjoint=adjoint, seminorm=False)

    def forward_backward():
        net.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        (-net.log_prob(x).mean()).backward()

    return peak_memory_mib(forward_backward)


def test_backprop_memory_grows_with_steps_and_the_adjoints_does_not():
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l2_h128_sigmoid", num_classes=2)
    x = torch.randn(512, 2)
    backprop = [_pass_peak(net, x, steps, adjoint=False) for steps in (4, 16)]
    adjoint = [_pass_peak(net, x, steps, adjoint=True) for steps in (4, 16)]
    # backprop holds every stage's activations (a 512 x 128 float32 layer is 0.25 MiB, several per stage)
    assert backprop[1] > 3.0 * backprop[0]
    assert adjoint[1] < 1.3 * adjoint[0]
    assert adjoint[1] < backprop[1] / 3.0
