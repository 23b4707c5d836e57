"""CUDA smoke test: one training pass (forward, adjoint backward) of the paper's toy and tabular
nets on the GPU, timed against one pass on the CPU (one thread, as the runner uses for nets under
1M parameters), each after one warm-up pass; prints one JSON line per net and exits 1 when a loss or gradient is not finite or
a gradient is not on the GPU.

    python benchmarks/gpu_smoke.py [--repeats 3] [--json FILE]

Data: standard normal rows (the timing and NFE of a fresh net, not of a trained one).
"""
import argparse
import json
import statistics
import sys
import time

import torch

#: (label, registry name, factory keywords, dimensions, batch): the Gaussians paper net on the
#: one-pass Hutchinson path, the same on the torchdyn backend, and the MINIBOONE paper net
NETS = [("toy", "ffjord_l2_h128_sigmoid_da", dict(num_classes=2), 2, 1024),
        ("toy torchdyn", "ffjord_l2_h128_sigmoid_da", dict(num_classes=2, backend="torchdyn"), 2, 1024),
        ("MINIBOONE", "ffjord_l2_hm20_f1_softplus", dict(num_classes=43), 43, 1000)]


def one_pass(net, x):
    """Seconds of one forward + backward pass (synchronised), NFE, loss, gradients' state."""
    from torchprune_flows.cnf import backward, nfe_counts
    from torchprune_flows.objectives import NLLPriorLoss

    net.zero_grad(set_to_none=True)
    started = time.perf_counter()
    loss = NLLPriorLoss()(net(x), None)
    backward(loss)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    seconds = time.perf_counter() - started
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    return {"seconds": seconds, "nfe": nfe_counts(net), "loss": loss.item(),
            "grads_finite": bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads),
            "grads_device": sorted({str(g.device) for g in grads})}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torchprune_flows as tf

    ok = True
    for label, name, kwargs, dim, batch in NETS:
        torch.manual_seed(0)
        net = tf.build_network(name, **kwargs)
        x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))
        torch.set_num_threads(1)
        torch.manual_seed(2)
        one_pass(net, x)  # warm-up: a fresh net's first pass takes other steps than the next ones
        cpu = one_pass(net, x)
        net.cuda()
        torch.manual_seed(2)
        warm = one_pass(net, x.cuda())
        runs = [one_pass(net, x.cuda()) for _ in range(max(args.repeats, 1))]
        gpu_seconds = statistics.median(r["seconds"] for r in runs)
        passed = all(r["grads_finite"] and r["grads_device"] == ["cuda:0"] for r in [warm] + runs)
        ok &= passed
        line = json.dumps({"net": label, "name": name, "batch": batch, "result": "PASS" if passed else "FAIL",
                           "gpu_first_s": round(warm["seconds"], 3), "gpu_median_s": round(gpu_seconds, 4),
                           "cpu_1thread_s": round(cpu["seconds"], 3),
                           "gpu_speedup": round(cpu["seconds"] / gpu_seconds, 2),
                           "nfe_gpu": runs[-1]["nfe"], "nfe_cpu": cpu["nfe"],
                           "loss_gpu": round(runs[-1]["loss"], 4), "loss_cpu": round(cpu["loss"], 4),
                           "grads_device": runs[-1]["grads_device"]})
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(line + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
