"""The tabular nets' seminorm gradient error and backward NFE against ``adjoint_tol_factor``.

For each shape: the benchmark's net (fresh weights, seed 0) on 128 Gaussian rows (seed 0), one
training pass per factor in float64 and float32 with float32 Hutchinson probes, its gradient
against ours backpropagated through torchdiffeq's dopri5 in float64 at atol = rtol = 1e-10 on the
same probes (the shapes, reference and probes of ``benchmarks/test_vs_ffjord.py``, which measures
FFJORD's errors on the same rows).

    python benchmarks/adjoint_tol_factor.py --factors 1,2,3 power gas
"""
import argparse
import copy

import torch

import torchprune_flows as tf
from torchprune_flows.cnf import nfe_counts, set_solver

from test_vs_ffjord import ACCURACY_BATCH, BACKPROP_REFERENCE, TABULAR, _float32_probes


def _pass(net, x):
    """The weights' gradient (without the end times, which FFJORD's nets lack) and the NFE."""
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    (-net.log_prob(x).mean()).backward()
    grad = torch.cat([p.grad.flatten().double() for name, p in net.named_parameters()
                      if p.grad is not None and "sqrt_end_time" not in name])
    counts = nfe_counts(net)
    return grad, counts["forward"], counts["backward"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="+", choices=list(TABULAR))
    parser.add_argument("--factors", default="1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("shape | factor | float64 error | float32 error | float32 NFE-F / NFE-B")
    for shape in args.shapes:
        network, dim = TABULAR[shape][:2]
        torch.manual_seed(0)
        net = tf.build_network(network, num_classes=dim)
        x = torch.randn(500, dim, generator=torch.Generator().manual_seed(0))[:ACCURACY_BATCH]
        with _float32_probes():
            reference = copy.deepcopy(net).double()
            set_solver(reference, **BACKPROP_REFERENCE)
            exact, _, _ = _pass(reference, x.double())
            for factor in (float(f) for f in args.factors.split(",")):
                errors, nfe = [], None
                for dtype in (torch.float64, torch.float32):
                    ours = copy.deepcopy(net).to(dtype)
                    set_solver(ours, adjoint_tol_factor=factor)
                    grad, forward, backward = _pass(ours, x.to(dtype))
                    errors.append(((grad - exact).norm() / exact.norm()).item())
                    nfe = f"{forward} / {backward}"
                print(f"{shape} | {factor:g} | {errors[0]:.2e} | {errors[1]:.2e} | {nfe}", flush=True)

if __name__ == "__main__":
    main()
