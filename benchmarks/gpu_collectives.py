"""Our collectives (runner/distributed.py) over a real NCCL process group; run under torchrun.

    torchrun --standalone --nproc_per_node=1 benchmarks/gpu_collectives.py            # one GPU
    torchrun --standalone --nproc_per_node=2 benchmarks/gpu_collectives.py --share-gpu

With one process the group has one rank, and the script reports two ranks to our code
(``dist.get_world_size`` answers 2), so every function takes its multi-rank path and hands its
tensors to NCCL, which reduces over the one real rank: the gradients must come back unchanged,
the means equal their inputs. A training epoch runs through ``runner.training.train`` the same
way (rank 0's half of each batch, the evaluation broadcast by ``run_once``), then FT pruning by
``prune_once``. ``--share-gpu`` puts every process on GPU ``local_rank % device_count`` (NCCL
normally refuses two ranks on one GPU: the script reports what happened). Prints one JSON line
per rank and exits 1 on any failure.
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist


def check(real_size):
    import torchprune_flows as tf
    from torchprune_flows.cnf import backward
    from torchprune_flows.objectives import Dummy, NLLPrior, NLLPriorLoss
    from torchprune_flows.pruning import count_parameters
    from torchprune_flows.runner import distributed, training

    device = distributed.collective_device()  # NCCL: this rank's GPU; Gloo (the dry run): the CPU
    if dist.get_backend() == "nccl":
        assert device == torch.device("cuda", torch.cuda.current_device()), device
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l2_h64_sigmoid_da", num_classes=2).to(device)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(1)).to(device)
    backward(NLLPriorLoss()(net(x), None))
    grads = [p.grad.clone() for p in net.parameters()]
    assert distributed.agree_on_failure(None) is None
    assert distributed.agree_on_failure("diverged") == "diverged"
    distributed.average_gradients(list(net.parameters()), len(x))
    if real_size == 1:  # one real rank: the weighted mean of one shard is that shard's gradient
        for param, before in zip(net.parameters(), grads):
            torch.testing.assert_close(param.grad, before, rtol=1e-6, atol=0)
        assert distributed.global_mean(1.25, 40) == 1.25 and distributed.mean_over_ranks(2.5) == 2.5
    assert distributed.run_once(lambda: {"rank0": 7}) == {"rank0": 7}
    data = torch.utils.data.TensorDataset(torch.randn(600, 2, generator=torch.Generator().manual_seed(2)),
                                          torch.zeros(600))
    loader = torch.utils.data.DataLoader(data, batch_size=201, shuffle=True, generator=torch.Generator())
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.tensors[0][:100], data.tensors[1][:100]),
                                      batch_size=100)
    tcfg = {"numEpochs": 2, "optimizer": "Adam", "optimizerKwargs": {"lr": 1e-2}, "lrSchedulers": [],
            "earlyStopEpoch": 1}
    started = time.perf_counter()
    summary = training.train(net, {"train": loader, "val": val}, tcfg, NLLPriorLoss(), [NLLPrior(2), Dummy(2)],
                             device, 0, 0, None)
    train_seconds = time.perf_counter() - started
    state = distributed.prune_once(net, "FT", 0.5, count_parameters(net))
    devices = sorted({str(t.device) for part in state.values() for t in part.values()})
    assert devices == [str(device)], devices
    losses = [r["train_loss"] for r in summary["history"]]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    return {"train_losses": [round(v, 4) for v in losses], "train_seconds": round(train_seconds, 2),
            "pruned_state_devices": devices}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share-gpu", action="store_true", help="every process on GPU local_rank %% device_count")
    parser.add_argument("--gloo-cpu", action="store_true", help="a dry run of this script without a GPU")
    args = parser.parse_args(argv)
    local_rank, real_size = int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    report = {"rank": int(os.environ["RANK"]), "world_size": real_size, "gpus": torch.cuda.device_count()}
    try:
        if args.gloo_cpu:
            dist.init_process_group("gloo")
        else:
            report["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
            torch.cuda.set_device(local_rank % torch.cuda.device_count() if args.share_gpu else local_rank)
            dist.init_process_group("nccl")
        if real_size == 1:
            dist.get_world_size = lambda *a, **k: 2  # our code takes its multi-rank path over the one real rank
        report.update(check(real_size))
        report["result"] = "PASS"
    except Exception as err:  # noqa: BLE001  (reported, then exit 1)
        report.update(result="FAIL", error=f"{type(err).__name__}: {err}"[:2000],
                      where=traceback.format_exc().strip().splitlines()[-3:])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    print(json.dumps(report), flush=True)
    return 0 if report["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
