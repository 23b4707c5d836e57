"""Every tensor made inside a solve or handed to a collective is on the model's device, checked on a CPU.

On a GPU run the model and its data are on "cuda" while the default device stays "cpu", so a
tensor made without naming a device lands on the CPU, and the first op that mixes it with the
model's tensors raises (NCCL rejects CPU tensors outright). Here the roles are mirrored: the
default device is "meta" (``with torch.device("meta")``) while the model and data stay on the
CPU, so the same omission lands on "meta" and raises the same way. (A 0-dim tensor made on the
wrong device, which CUDA would accept from the CPU, raises here too: stricter, never laxer.)
Inside the context every number must equal the one computed without it.
"""
import os

import pytest
import torch
import torch.distributed as dist

import torchprune_flows as tf
from conftest import one_error_line
from torchprune_flows.cnf import backward
from torchprune_flows.cnf.cnf import with_divergence
from torchprune_flows.export import exported_dict
from torchprune_flows.objectives import NLLPriorLoss
from torchprune_flows.pruning import count_parameters
from torchprune_flows.runner import distributed

pytestmark = pytest.mark.usefixtures("torch_single_thread")

#: a tiny multiscale image flow: 8x8 images, one scale, 4-channel hidden convs, loose solver
IMAGE = dict(num_classes=10, image_size=8, hidden=(4,), blocks=1, atol=1e-3, rtol=1e-3)

#: (name, factory keywords, data shape): the one-pass Hutchinson toy path, the exact divergence,
#: a tabular flow, an image flow, and a NODE classifier. Not the torchdyn backend: torchdyn 1.0.6
#: makes its Butcher tableau on the CPU and moves it (``.to(x)``), which works on a GPU but not from
#: "meta" (benchmarks/gpu_check.sh runs it on CUDA).
SOLVES = [("ffjord_l2_h16_sigmoid_da", dict(num_classes=2), (2,)),
          ("cnf_l2_h16_tanh_high_tol", dict(num_classes=2), (2,)),
          ("ffjord_l1_hm2_f2_softplus_high_tol", dict(num_classes=5), (5,)),
          ("ffjord_multiscale_mnist", IMAGE, (1, 8, 8)),
          ("node_l2_h8_tanh", dict(num_classes=2), (2,))]


def _data(shape, n=16, seed=1):
    generator = torch.Generator().manual_seed(seed)
    if len(shape) == 3:  # images in (0, 1)
        return torch.rand((n, *shape), generator=generator) * 0.9 + 0.05
    return torch.randn((n, *shape), generator=generator)


def _train_step_and_evaluate(net, x):
    """Loss, gradients, exact-divergence log-densities (low-dimensional flows) and samples."""
    torch.manual_seed(3)  # the Hutchinson probes
    out = net(x)
    classifier = not isinstance(out, dict)
    loss = torch.nn.functional.cross_entropy(out, torch.arange(len(x), device=x.device) % 2) if classifier else NLLPriorLoss()(out, None)
    net.zero_grad(set_to_none=True)
    backward(loss)
    result = {"loss": loss.detach(), "grads": [p.grad.clone() for p in net.parameters() if p.grad is not None]}
    if not classifier:
        with torch.no_grad():
            if x[0].numel() <= 5:
                with with_divergence(net, "exact"):
                    result["log_prob"] = net.log_prob(x)
            result["samples"] = net.sample(4, generator=torch.Generator().manual_seed(4))
    return result


@pytest.mark.parametrize("name,kwargs,shape", SOLVES, ids=[case[0] for case in SOLVES])
def test_solves_make_every_tensor_on_the_models_device(name, kwargs, shape):
    torch.manual_seed(0)
    net = tf.build_network(name, **kwargs)
    x = _data(shape)
    reference = _train_step_and_evaluate(net, x)
    with torch.device("meta"):  # a tensor made without the model's device lands on "meta"
        placed = _train_step_and_evaluate(net, x)
    assert reference["grads"] and len(placed["grads"]) == len(reference["grads"])
    for key in ("loss", "log_prob", "samples"):
        if key in reference:
            assert placed[key].device.type == "cpu" and torch.equal(placed[key], reference[key]), key
    for mine, theirs in zip(placed["grads"], reference["grads"]):
        assert mine.device.type == "cpu" and torch.isfinite(mine).all() and torch.equal(mine, theirs)


def _standalone(net):
    namespace = {}
    exported = exported_dict(net)
    exec(exported["loader"], namespace)
    return namespace["StandaloneFlow"](exported)


def _standalone_outputs(flow, x, exact):
    torch.manual_seed(5)  # the global stream's probes
    out = {"own": flow.log_prob(x),
           "seeded": flow.log_prob(x, generator=torch.Generator().manual_seed(6)),
           "samples": flow.sample(4, generator=torch.Generator().manual_seed(7)),
           "sampled": flow.sample(4)}
    if exact:
        out["exact"] = flow.log_prob(x, divergence="exact")
    return out


@pytest.mark.parametrize("name,kwargs,shape", [SOLVES[0], SOLVES[3]], ids=["toy", "image"])
def test_the_standalone_flow_makes_its_tensors_on_the_datas_device(name, kwargs, shape):
    torch.manual_seed(0)
    flow = _standalone(tf.build_network(name, **kwargs))
    x = _data(shape, n=8)
    torch.manual_seed(8)
    reference = _standalone_outputs(flow, x, exact=len(shape) == 1)
    torch.manual_seed(8)
    with torch.device("meta"):
        placed = _standalone_outputs(flow, x, exact=len(shape) == 1)
    assert flow.device == torch.device("cpu")
    for key, value in reference.items():
        assert placed[key].device.type == "cpu" and torch.equal(placed[key], value), key


@pytest.fixture
def pretend_two_ranks(tmp_path, monkeypatch):
    """A real one-rank Gloo group that reports two ranks, so our collectives take the multi-rank
    path (a sum over the one real rank); records the device of every tensor handed to torch."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    handed = []
    all_reduce, broadcast_objects = dist.all_reduce, dist.broadcast_object_list

    def recording_all_reduce(tensor, *args, **kwargs):
        handed.append(("all_reduce", tensor.device, tensor.numel()))
        return all_reduce(tensor, *args, **kwargs)

    def recording_broadcast(objects, *args, **kwargs):
        handed.extend(("broadcast", t.device, t.numel()) for obj in objects if isinstance(obj, tuple)
                      for t in _tensors(obj))
        return broadcast_objects(objects, *args, **kwargs)

    monkeypatch.setattr(dist, "get_world_size", lambda *args, **kwargs: 2)
    monkeypatch.setattr(dist, "all_reduce", recording_all_reduce)
    monkeypatch.setattr(dist, "broadcast_object_list", recording_broadcast)
    yield handed
    dist.destroy_process_group()


def _tensors(obj):
    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in _tensors(value)]
    return []


def test_collectives_get_tensors_on_the_backend_device_and_one_gradient_reduce(pretend_two_ranks):
    handed = pretend_two_ranks
    assert distributed.rank_and_size() == (0, 2) and distributed.collective_device() == torch.device("cpu")
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l2_h16_sigmoid_da", num_classes=2)
    x = _data((2,), n=40)
    loss = NLLPriorLoss()(net(x), None)
    backward(loss)
    grads = [p.grad.clone() for p in net.parameters()]
    with torch.device("meta"):
        assert distributed.agree_on_failure(None) is None
        assert distributed.agree_on_failure("solver failed") == "solver failed"
        del handed[:]
        distributed.average_gradients(list(net.parameters()), len(x))
        # every gradient and the shard size in one all-reduce: (sum of n * grad) / (sum of n)
        assert [(kind, numel) for kind, _, numel in handed] == [("all_reduce", sum(g.numel() for g in grads) + 1)]
        for param, before in zip(net.parameters(), grads):
            assert torch.allclose(param.grad, before, rtol=1e-6, atol=0)  # one real rank: its own mean
        assert distributed.global_mean(1.25, 40) == 1.25 and distributed.mean_over_ranks(2.5) == 2.5
        state = distributed.prune_once(net, "FT", 0.5, count_parameters(net))
    assert {device for _, device, _ in handed} == {torch.device("cpu")}
    assert any(kind == "broadcast" for kind, _, _ in handed)  # the pruned state travelled
    assert all(t.device.type == "cpu" for t in _tensors(state)) and state["masks"]


def _fixed_probes(seed):
    """A probe sampler drawing from a seeded CPU generator, then moved: the same probes on any device."""
    generator = torch.Generator().manual_seed(seed)

    def sample(z, kind="gaussian"):
        if kind == "rademacher":
            probe = torch.randint(0, 2, z.shape, generator=generator).to(z.dtype) * 2 - 1
        else:
            probe = torch.randn(z.shape, generator=generator, dtype=z.dtype)
        return probe.to(z.device)
    return sample


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name,kwargs,shape", SOLVES + [("ffjord_l2_h8_tanh_da", dict(num_classes=2, backend="torchdyn"),
                                                         (2,))], ids=[case[0] for case in SOLVES] + ["torchdyn"])
def test_cuda_gives_the_cpus_loss_and_gradients(name, kwargs, shape, monkeypatch):
    from torchprune_flows.cnf import dynamics

    torch.manual_seed(0)
    net = tf.build_network(name, **kwargs).double()
    x = _data(shape).double()
    results = {}
    for device in ("cpu", "cuda"):
        monkeypatch.setattr(dynamics, "sample_probe", _fixed_probes(3))  # float64, same probes: same steps
        net.to(device)
        results[device] = _train_step_and_evaluate(net, x.to(device))
    cpu, gpu = results["cpu"], results["cuda"]
    assert float(gpu["loss"]) == pytest.approx(float(cpu["loss"]), rel=1e-6)
    flat_cpu = torch.cat([g.reshape(-1) for g in cpu["grads"]])
    flat_gpu = torch.cat([g.reshape(-1).cpu() for g in gpu["grads"]])
    assert all(g.is_cuda for g in gpu["grads"])
    assert torch.linalg.vector_norm(flat_gpu - flat_cpu) <= 1e-5 * torch.linalg.vector_norm(flat_cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_collective_device_under_nccl_is_this_ranks_gpu(tmp_path):
    os.environ.setdefault("LOCAL_RANK", "0")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed.collective_device() == torch.device("cuda", torch.cuda.current_device())
    finally:
        dist.destroy_process_group()


def test_the_hessian_analysis_makes_its_tensors_on_the_models_device():
    from torchprune_flows.analysis.hessian import hessian_summary
    from torchprune_flows.cnf.cnf import set_solver
    from torchprune_flows.objectives import nll_nats

    torch.manual_seed(0)
    net = tf.build_network("cnf_l2_h4_tanh_rk4_autograd", num_classes=2, step_size=0.5).double()
    set_solver(net, adjoint=False)  # second derivatives: backprop through the solver
    x = _data((2,), n=12).double()

    def summary():
        return hessian_summary(net, lambda: nll_nats(net(x)), probes=4, iters=6, slq_probes=2)

    reference = summary()
    with torch.device("meta"):
        placed = summary()
    assert placed == reference


def test_more_torchrun_processes_than_gpus_is_one_error_line(tiny, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a one-GPU machine
    assert tiny.run("--device", "cuda") == 2
    one_error_line(capsys, "local rank 1", "1 GPU(s)", "--nproc_per_node=1")
    assert not dist.is_initialized() and not os.path.exists(tiny.path("out"))
