"""Data-parallel training under torchrun (here: 2 Gloo processes on the CPU): the same loss
trajectory as one process on the full batch; pruning and evaluation run on rank 0 only and are
broadcast, so both ranks end with rank 0's weights, masks and evaluation numbers."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(rank, size, port, out_dir):
    import torch.distributed as dist

    import torchprune_flows as tf
    from torchprune_flows.objectives import Dummy, NLLPrior, NLLPriorLoss
    from torchprune_flows.pruning import count_parameters, export_state
    from torchprune_flows.runner import distributed, training

    seen, calls = [], {"prune": 0, "evaluate": 0}
    split, prune, evaluate = training.shard, distributed.prune, training.evaluate

    def recording_shard(x, y):
        part = split(x, y)
        seen.append(len(part[0]))
        return part

    def counting(name, fn):
        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return counted

    # (this process only) the rows each rank trains on, and which rank prunes and evaluates
    training.shard = recording_shard
    distributed.prune, training.evaluate = counting("prune", prune), counting("evaluate", evaluate)
    torch.set_num_threads(1)
    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(0)
    net = tf.build_network("cnf_l2_h16_tanh_high_tol", num_classes=2)  # exact divergence: no probes
    data = torch.utils.data.TensorDataset(torch.randn(240, 2, generator=torch.Generator().manual_seed(1)),
                                          torch.zeros(240))
    # 81 rows a batch: shards of 41 and 40 rows, whose gradients only average right weighted by size
    loader = torch.utils.data.DataLoader(data, batch_size=81, shuffle=True, generator=torch.Generator())
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.tensors[0][:40], data.tensors[1][:40]),
                                      batch_size=40)
    tcfg = {"numEpochs": 3, "optimizer": "Adam", "optimizerKwargs": {"lr": 1e-2}, "lrSchedulers": [],
            "earlyStopEpoch": 2}  # validation (an evaluation) after the last epoch
    metrics = [NLLPrior(2), Dummy(2)]
    summary = training.train(net, {"train": loader, "val": val}, tcfg, NLLPriorLoss(), metrics, "cpu", 0, 0, None)
    if rank == 1:  # were rank 1 to prune on its own, these weights would give other masks and weights
        with torch.no_grad():
            for param in net.parameters():
                param.add_(torch.randn_like(param))
    pruned = distributed.prune_once(net, "FT", 0.5, count_parameters(net))
    evaluation = distributed.run_once(training.evaluate, net, val, NLLPriorLoss(), metrics, "cpu", 0)
    torch.save({"losses": [r["train_loss"] for r in summary["history"]], "state": export_state(net), "seen": seen,
                "pruned": pruned, "evaluation": evaluation, "calls": calls},
               os.path.join(out_dir, f"rank{rank}_of{size}.pt"))
    if size > 1:
        distributed.leave_process_group()


def test_two_gloo_ranks_train_like_one_process_and_take_rank0s_pruning(tmp_path):
    _train(0, 1, None, str(tmp_path))
    mp.spawn(_train, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    single = torch.load(tmp_path / "rank0_of1.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}_of2.pt", weights_only=True) for r in range(2)]
    assert set(single["seen"]) == {81, 78} and set(ranks[0]["seen"]) == {41, 39} and set(ranks[1]["seen"]) == {40, 39}
    for losses in (ranks[0]["losses"], ranks[1]["losses"]):
        for a, b in zip(losses, single["losses"]):
            assert abs(a - b) <= 1e-4 * abs(b), (losses, single["losses"])
    # rank 0 pruned and evaluated (validation in training, then the final one); rank 1 never did
    assert single["calls"] == ranks[0]["calls"] == {"prune": 1, "evaluate": 2}
    assert ranks[1]["calls"] == {"prune": 0, "evaluate": 0}
    for key, value in ranks[0]["state"]["state_dict"].items():
        assert torch.equal(value, ranks[1]["state"]["state_dict"][key]), key  # identical on both ranks
        assert torch.allclose(value, single["state"]["state_dict"][key], rtol=1e-4, atol=1e-5), key
    assert ranks[0]["state"]["masks"].keys() == ranks[1]["state"]["masks"].keys()
    for key, mask in ranks[0]["state"]["masks"].items():
        assert torch.equal(mask, ranks[1]["state"]["masks"][key]) and torch.equal(mask, single["state"]["masks"][key])
        assert torch.equal(mask, ranks[1]["pruned"]["masks"][key])  # what prune_once returned on rank 1
    assert ranks[0]["evaluation"] == ranks[1]["evaluation"]
    assert ranks[0]["evaluation"]["loss"] == pytest.approx(single["evaluation"]["loss"], rel=1e-4)


def _fail_on_rank0(rank, size, port, out_dir):
    import torch.distributed as dist

    from torchprune_flows.pruning import PruningError
    from torchprune_flows.runner.distributed import leave_process_group, run_once

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)

    def fail():
        raise PruningError("keep ratio out of range")

    try:
        run_once(fail)
    except PruningError as err:  # on every rank: they stop together instead of waiting on rank 0
        open(os.path.join(out_dir, f"raised{rank}"), "w").write(str(err))
    leave_process_group()


def test_an_error_on_rank0_is_raised_on_every_rank(tmp_path):
    mp.spawn(_fail_on_rank0, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"raised{r}").read_text() for r in range(2)] == ["keep ratio out of range"] * 2


def _run_cli(rank, size, port, config, out):
    from torchprune_flows.runner.cli import main

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(size))  # what torchrun sets
    torch.set_num_threads(1)
    code = main([config, "--out", out])
    with open(os.path.join(out, f"exit_code_rank{rank}"), "w") as handle:
        handle.write(str(code))


def test_the_pipeline_under_two_gloo_ranks_gives_the_single_process_results(tiny):
    import csv

    def rows(folder):
        with open(tiny.path(folder, "results.csv")) as handle:
            return list(csv.DictReader(handle))

    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    tiny.cfg["experiments"]["control"] = "dense"  # its unpruned cycle trains data-parallel too
    assert tiny.run(out="single") == 0
    mp.spawn(_run_cli, args=(2, _free_port(), tiny.write(), tiny.path("ranks")), nprocs=2)
    assert [open(tiny.path("ranks", f"exit_code_rank{r}")).read() for r in range(2)] == ["0", "0"]
    single, ranks = rows("single"), rows("ranks")
    assert [(r["method"], r["keep_ratio"], r["cycle"], r["params"], r["converged"]) for r in ranks] == \
        [(r["method"], r["keep_ratio"], r["cycle"], r["params"], r["converged"]) for r in single]
    assert ("DenseControl", "1") in [(r["method"], r["cycle"]) for r in ranks]
    for a, b in zip(ranks, single):  # exact divergence: the same numbers up to float rounding
        assert float(a["test_loss"]) == pytest.approx(float(b["test_loss"]), rel=1e-3), a["method"]
