"""export_flow: a compacted pruned flow as a standalone file that needs only torch + torchdiffeq."""
import os
import subprocess
import sys

import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.cnf import cnf_blocks, set_solver
from torchprune_flows.cnf.cnf import with_divergence
from torchprune_flows.export import exported_dict
from torchprune_flows.objectives import bits_per_dim_per_sample
from torchprune_flows.pruning import count_nonzero, count_parameters, export_state, prune

#: run in a fresh interpreter in which importing torchprune_flows fails
STANDALONE_SCRIPT = """
import sys
sys.modules["torchprune_flows"] = None
import torch
exported = torch.load(sys.argv[1], weights_only=True)
namespace = {}
exec(exported["loader"], namespace)
flow = namespace["StandaloneFlow"](exported)
x = torch.load(sys.argv[2])
torch.manual_seed(2)
own = flow.log_prob(x)
torch.manual_seed(2)
bits = flow.bits_per_dim(x)
exact = flow.log_prob(x, divergence="exact") if sys.argv[4] == "exact" else None
samples = flow.sample(8, generator=torch.Generator().manual_seed(3))
torch.save({"own": own, "bits": bits, "exact": exact, "samples": samples}, sys.argv[3])
"""

#: a small multiscale image flow: 8x8 images, two scales, 8-channel hidden convs, loose solver
IMAGE = dict(num_classes=10, image_size=8, hidden=(8, 8), atol=1e-3, rtol=1e-3)

#: (registry name, factory keywords, data shape, whether to compare the exact trace too: it costs
#: one backward pass per dimension and evaluation, so only on 1 x 8 x 8 images with one CNF per step)
CASES = [("ffjord_l4_h64_sigmoid_da", dict(num_classes=2), (2,), True),
         ("ffjord_l1_hm4_f3_softplus_high_tol", dict(num_classes=6), (6,), True),
         ("ffjord_multiscale_mnist", dict(IMAGE, blocks=1), (1, 8, 8), True),
         ("ffjord_multiscale_cifar", IMAGE, (3, 8, 8), False)]


def _data(shape, n, seed):
    generator = torch.Generator().manual_seed(seed)
    if len(shape) == 3:  # images in (0, 1)
        return torch.rand((n, *shape), generator=generator) * 0.9 + 0.05
    return torch.randn((n, *shape), generator=generator)


def _load(exported):
    namespace = {}
    exec(exported["loader"], namespace)
    return namespace["StandaloneFlow"](exported)


def _tensor_entries(exported):
    return sum(t.numel() for stage in exported["stages"] for layer in stage for block_layer in layer.get("layers", [])
               for t in block_layer.values() if torch.is_tensor(t))


def _pruned_image_flow(keep=0.2, **kwargs):
    torch.manual_seed(0)
    net = tf.build_network("ffjord_multiscale_mnist", **{**IMAGE, **kwargs})
    if keep < 1:
        prune(net, "FT", keep, count_parameters(net))
    return net


@pytest.mark.parametrize("name,kwargs,shape,compare_exact", CASES, ids=[c[0] for c in CASES])
def test_exported_pruned_flow_matches_without_the_package(tmp_path, name, kwargs, shape, compare_exact):
    torch.manual_seed(0)
    net = tf.build_network(name, **kwargs)
    prune(net, "FT", 0.2, count_parameters(net))
    path = tf.export_flow(net, str(tmp_path / "flow.pt"))
    x = _data(shape, 32 if len(shape) == 1 else 8, seed=1)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", STANDALONE_SCRIPT, path, str(tmp_path / "x.pt"), str(tmp_path / "out.pt"),
                    "exact" if compare_exact else "-"],
                   check=True, cwd=tmp_path)
    got = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        torch.manual_seed(2)
        native = net.log_prob(x)
    # the loader integrates with torchdiffeq's dopri5, whose steps our default (native) takes in exact
    # arithmetic (tests/test_native_solver.py, float64); in float32 rounding can tip a step decision
    assert torch.allclose(got["own"], native, rtol=1e-3, atol=0), (got["own"] - native).abs().max()
    set_solver(net, backend="torchdiffeq")
    with torch.no_grad():
        torch.manual_seed(2)
        own = net.log_prob(x)  # the network's own estimator (Hutchinson), the same probes
        torch.manual_seed(2)
        bits = bits_per_dim_per_sample(net(x))  # the package's bits/dim, the same probes
        if compare_exact:
            with with_divergence(net, "exact"):
                exact = net.log_prob(x)
            assert torch.allclose(got["exact"], exact, rtol=1e-5, atol=0), (got["exact"] - exact).abs().max()
    expected_samples = net.sample(8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got["own"], own, rtol=1e-5, atol=0), (got["own"] - own).abs().max()
    assert torch.allclose(got["bits"], bits, rtol=1e-5, atol=0), (got["bits"] - bits).abs().max()
    assert got["samples"].shape == (8, *shape)
    assert torch.allclose(got["samples"], expected_samples, rtol=1e-5, atol=1e-6)


def test_exported_image_flow_uses_the_compact_weights_and_its_samples_map_back():
    net = _pruned_image_flow(atol=1e-6, rtol=1e-6)
    flow = _load(exported_dict(net))
    compact = tf.compact(net)
    set_solver(compact, backend="torchdiffeq")  # the loader's solver, step for step
    x = _data((1, 8, 8), 4, seed=4)
    torch.manual_seed(5)  # the file's blocks against the compact net they were written from, the same probes
    got = flow.log_prob(x)
    torch.manual_seed(5)
    with torch.no_grad():
        expected = compact.log_prob(x)
    assert torch.allclose(got, expected, rtol=1e-6, atol=0), (got - expected).abs().max()
    # probes from a generator are those the global stream gives after the same seed; other seeds differ
    assert torch.equal(flow.log_prob(x, generator=torch.Generator().manual_seed(5)), got)
    assert not torch.allclose(flow.log_prob(x, generator=torch.Generator().manual_seed(7)), got, rtol=1e-4, atol=0)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    samples = flow.sample(4, z=z)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(flow.log_prob(samples)).all()
    with torch.no_grad():
        assert torch.allclose(net(samples)["z"], z.reshape(4, -1), atol=1e-4)  # the flow maps them back to z


def test_a_pruned_image_flow_exports_only_its_remaining_channels(tmp_path):
    dense, pruned = _pruned_image_flow(keep=1.0), _pruned_image_flow(keep=0.2)
    dense_path = tf.export_flow(dense, str(tmp_path / "dense.pt"))
    pruned_path = tf.export_flow(pruned, str(tmp_path / "pruned.pt"))
    assert os.path.getsize(pruned_path) < os.path.getsize(dense_path)
    dense_file, pruned_file = (torch.load(p, weights_only=True) for p in (dense_path, pruned_path))
    # every parameter but the end times (stored as numbers): exactly the nonzero structure of the pruned net
    assert _tensor_entries(dense_file) == count_parameters(dense) - len(cnf_blocks(dense))
    assert _tensor_entries(pruned_file) == count_nonzero(pruned) - len(cnf_blocks(pruned)) < _tensor_entries(dense_file)
    assert [[layer["kind"] for layer in stage] for stage in pruned_file["stages"]] == [
        ["logit", "concatconv", "concatconv", "squeeze", "concatconv", "concatconv"], ["concatconv", "concatconv"]]


def test_files_of_the_first_format_still_load():
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l1_hm4_f3_softplus_high_tol", num_classes=6)
    current = exported_dict(net)
    first = dict(format="torchprune_flows.standalone/1", data_shape=current["data_shape"], loader=current["loader"],
                 blocks=[{k: v for k, v in block.items() if k != "probe"} for block in current["stages"][0]])
    x = _data((6,), 16, seed=1)
    torch.manual_seed(2)
    expected = _load(current).log_prob(x)
    torch.manual_seed(2)
    assert torch.equal(_load(first).log_prob(x), expected)
    with pytest.raises(ValueError, match="not a torchprune_flows.standalone/2 file"):
        _load(dict(first, format="torchprune_flows.standalone/9"))


def test_export_refuses_flows_it_cannot_write(tmp_path):
    with pytest.raises(NotImplementedError, match="flows made of CNF blocks .* NeuralODEClassifier is not one"):
        tf.export_flow(tf.build_network("node_l2_h8_tanh", num_classes=2), str(tmp_path / "flow.pt"))
    with pytest.raises(NotImplementedError, match="torchdiffeq solver options; the block uses torchdyn"):
        tf.export_flow(tf.build_network("ffjord_multiscale_mnist", **IMAGE, backend="torchdyn"), str(tmp_path / "f.pt"))
    assert not os.listdir(tmp_path)


def _check_export_command(run_dir, path, keep, x):
    from torchprune_flows.runner.commands import main
    from torchprune_flows.runner.runs import RunFolder

    assert main(["export", run_dir, "--method", "FT", "--keep", str(keep), "--out", path]) == 0
    exported = torch.load(path, weights_only=True)
    flow = _load(exported)
    run = RunFolder.open(run_dir)
    net = run.load_network(run.select("FT", keep))
    set_solver(net, backend="torchdiffeq")  # the loader's solver, step for step
    torch.manual_seed(2)  # each block's own estimator (toy: exact; image: Hutchinson), the same probes
    with torch.no_grad():
        expected = net.log_prob(x)
    torch.manual_seed(2)
    assert torch.allclose(flow.log_prob(x).to(expected), expected, rtol=1e-5, atol=1e-5)
    assert _tensor_entries(exported) < sum(p.numel() for p in net.parameters())  # compacted


def test_the_export_command_on_a_finished_run(cascade_run, tmp_path):
    _, out, rc = cascade_run
    assert rc == 0
    _check_export_command(out, str(tmp_path / "ft.pt"), 0.3, torch.randn(16, 2, generator=torch.Generator().manual_seed(5)))


def test_the_export_command_on_an_image_run(tmp_path):
    """A run folder as the pipeline leaves it (config, step record, checkpoint), without the training."""
    from torchprune_flows.runner.runs import RunFolder

    kwargs = {k: v for k, v in IMAGE.items() if k != "num_classes"}
    cfg = {"network": {"name": "ffjord_multiscale_mnist", "dataset": "MNIST", "outputSize": 10,
                       "kwargs": dict(kwargs, hidden=list(IMAGE["hidden"]))}}
    folder = RunFolder(str(tmp_path / "run"))
    folder.write_config(cfg)
    net = _pruned_image_flow(keep=0.3)
    folder.finish(folder.pruned_step(0, 0, "FilterThresNet", 0),
                  {"net": 0, "repetition": 0, "method": "FilterThresNet", "keep_ratio": 0.3}, export_state(net))
    _check_export_command(folder.run_dir, str(tmp_path / "ft.pt"), 0.3, _data((1, 8, 8), 4, seed=5))


def test_the_loader_reads_every_kind_export_writes():
    """export.py and the standalone loader (which cannot import the package) each keep a table of kinds."""
    from torchprune_flows import export, standalone

    assert sorted(entry.kind for entry in export.FIELD_EXPORTS.values()) == sorted(standalone.FIELD_KINDS)
    assert sorted(entry.kind for entry in export.LAYER_EXPORTS.values()) == sorted(standalone.LAYER_KINDS)
    assert not set(standalone.FIELD_KINDS) & set(standalone.LAYER_KINDS)


def test_the_loader_s_activations_are_the_package_s():
    from torchprune_flows import standalone
    from torchprune_flows.cnf.activations import ACTIVATIONS

    assert list(standalone.ACTIVATIONS) == list(ACTIVATIONS)
    a = torch.linspace(-25, 25, 101, dtype=torch.float64)  # beyond softplus's threshold of 20 too
    for name, activation in ACTIVATIONS.items():
        expected = activation.module()(a)
        assert torch.equal(standalone.ACTIVATIONS[name](a), expected), name
        assert torch.allclose(activation.value_and_slope(a)[0], expected, rtol=1e-12, atol=1e-12), name


def test_export_refuses_an_activation_the_loader_does_not_know():
    torch.manual_seed(0)
    net = tf.build_network("ffjord_l3_h8_tanh_high_tol")
    field = cnf_blocks(net)[0].vector_field
    field.net[1] = torch.nn.GELU()
    with pytest.raises(NotImplementedError, match="export writes the activations sigmoid, .*MLPField uses GELU"):
        exported_dict(net)
    field.net[1] = torch.nn.Softplus(beta=2)  # another function than the loader's softplus
    with pytest.raises(NotImplementedError, match="uses Softplus\\(beta=2"):
        exported_dict(net)
    field.net[1] = torch.nn.Softplus()
    with pytest.raises(NotImplementedError, match="one activation per vector field; MLPField uses softplus, tanh"):
        exported_dict(net)


def test_a_single_layer_field_exports_without_an_activation():
    torch.manual_seed(0)
    net = tf.build_network("cnf_l1_h8_tanh_high_tol")
    exported = exported_dict(net)
    assert exported["stages"][0][0]["activation"] is None
    x = _data((2,), 4, seed=1)
    with torch.no_grad():
        assert torch.allclose(_load(exported).log_prob(x), net.log_prob(x), rtol=1e-3, atol=0)


def test_the_loader_refuses_kinds_it_does_not_know():
    torch.manual_seed(0)
    exported = exported_dict(tf.build_network("ffjord_l2_h8_tanh_high_tol"))
    block = exported["stages"][0][0]
    with pytest.raises(ValueError, match="unknown layer kind 'resnet'; this loader reads mlp, concatsquash"):
        _load(dict(exported, stages=[[dict(block, kind="resnet")]]))
    with pytest.raises(ValueError, match="unknown activation 'gelu' in a mlp block; this loader reads sigmoid"):
        _load(dict(exported, stages=[[dict(block, activation="gelu")]]))
