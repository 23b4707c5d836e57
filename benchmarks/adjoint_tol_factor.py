"""The tabular nets' seminorm gradient error and backward NFE against ``adjoint_tol_factor``.

For each shape: the benchmark's net (fresh weights, seed 0) on 128 Gaussian rows (seed 0), one
training pass per factor in float64 and float32 with float32 Hutchinson probes, its gradient
against ours backpropagated through torchdiffeq's dopri5 in float64 at atol = rtol = 1e-10 on the
same probes. FFJORD's errors on the same rows: ``benchmarks/test_vs_ffjord.py``.

    python benchmarks/adjoint_tol_factor.py --factors 1,2,3 power gas
"""
import argparse
import copy

import torch

import torchprune_flows as tf
from torchprune_flows.cnf import cnf_blocks, dynamics, nfe_counts

SHAPES = {
    "miniboone": ("ffjord_l2_hm20_f1_softplus", 43),
    "power": ("ffjord_l3_hm10_f5_tanh", 6),
    "gas": ("ffjord_l3_hm20_f5_tanh", 8),
    "hepmass": ("ffjord_l2_hm10_f10_softplus", 21),
    "bsds300": ("ffjord_l3_hm20_f2_softplus", 63),
}
REFERENCE = dict(backend="torchdiffeq", adjoint=False, atol=1e-10, rtol=1e-10)


def _pass(net, x):
    """The weights' gradient (without the end times, which FFJORD's nets lack) and the NFE."""
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    (-net.log_prob(x).mean()).backward()
    grad = torch.cat([p.grad.flatten().double() for name, p in net.named_parameters()
                      if p.grad is not None and "sqrt_end_time" not in name])
    counts = nfe_counts(net)
    return grad, counts["forward"], counts["backward"]


def _with_solver(net, **options):
    for block in cnf_blocks(net):
        block.solver = block.solver.replace(**options)
    return net


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="+", choices=list(SHAPES))
    parser.add_argument("--factors", default="1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sample = dynamics.sample_probe
    dynamics.sample_probe = lambda like, kind: sample(like.float(), kind).to(like.dtype)
    print("shape | factor | float64 error | float32 error | float32 NFE-F / NFE-B")
    for shape in args.shapes:
        network, dim = SHAPES[shape]
        torch.manual_seed(0)
        net = tf.build_network(network, num_classes=dim)
        x = torch.randn(500, dim, generator=torch.Generator().manual_seed(0))[:128]
        exact, _, _ = _pass(_with_solver(copy.deepcopy(net).double(), **REFERENCE), x.double())
        for factor in (float(f) for f in args.factors.split(",")):
            errors, nfe = [], None
            for dtype in (torch.float64, torch.float32):
                grad, forward, backward = _pass(_with_solver(copy.deepcopy(net).to(dtype), adjoint_tol_factor=factor),
                                                x.to(dtype))
                errors.append(((grad - exact).norm() / exact.norm()).item())
                nfe = f"{forward} / {backward}"
            print(f"{shape} | {factor:g} | {errors[0]:.2e} | {errors[1]:.2e} | {nfe}", flush=True)


if __name__ == "__main__":
    main()
