"""Data-parallel training under torchrun (here: 2 Gloo processes on the CPU): the same loss
trajectory as one process on the full batch, and identical weights and masks on both ranks."""
import os
import socket

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
    from torchprune_flows.pruning import count_parameters, export_state, prune
    from torchprune_flows.runner import training

    seen, split = [], training.shard

    def recording_shard(x, y):
        part = split(x, y)
        seen.append(len(part[0]))
        return part

    training.shard = recording_shard  # (this process only) the rows each rank trains on
    torch.set_num_threads(1)
    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(0)
    net = tf.build_network("cnf_l2_h16_tanh_high_tol", num_classes=2)  # exact divergence: no probes
    data = torch.utils.data.TensorDataset(torch.randn(240, 2, generator=torch.Generator().manual_seed(1)),
                                          torch.zeros(240))
    loader = torch.utils.data.DataLoader(data, batch_size=80, shuffle=True, generator=torch.Generator())
    tcfg = {"numEpochs": 3, "optimizer": "Adam", "optimizerKwargs": {"lr": 1e-2}, "lrSchedulers": [],
            "earlyStopEpoch": 3}
    summary = training.train(net, {"train": loader, "val": None}, tcfg, NLLPriorLoss(), [NLLPrior(2), Dummy(2)], "cpu", 0, 0,
                    None)
    prune(net, "FT", 0.5, count_parameters(net))
    torch.save({"losses": [r["train_loss"] for r in summary["history"]], "state": export_state(net), "seen": seen},
               os.path.join(out_dir, f"rank{rank}_of{size}.pt"))
    if size > 1:
        dist.destroy_process_group()


def test_two_gloo_ranks_train_like_one_process_on_the_full_batch(tmp_path):
    _train(0, 1, None, str(tmp_path))
    mp.spawn(_train, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    single = torch.load(tmp_path / "rank0_of1.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}_of2.pt", weights_only=True) for r in range(2)]
    assert set(single["seen"]) == {80} and set(ranks[0]["seen"]) == set(ranks[1]["seen"]) == {40}  # real shards
    for losses in (ranks[0]["losses"], ranks[1]["losses"]):
        for a, b in zip(losses, single["losses"]):
            assert abs(a - b) <= 1e-4 * abs(b), (losses, single["losses"])
    for key, value in ranks[0]["state"]["state_dict"].items():
        assert torch.equal(value, ranks[1]["state"]["state_dict"][key]), key  # identical on both ranks
        assert torch.allclose(value, single["state"]["state_dict"][key], rtol=1e-4, atol=1e-5), key
    assert ranks[0]["state"]["masks"].keys() == ranks[1]["state"]["masks"].keys()
    for key, mask in ranks[0]["state"]["masks"].items():
        assert torch.equal(mask, ranks[1]["state"]["masks"][key]) and torch.equal(mask, single["state"]["masks"][key])
