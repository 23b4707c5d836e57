"""export_flow: a compacted pruned flow as a standalone file that needs only torch + torchdiffeq."""
import subprocess
import sys

import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.cnf.cnf import with_divergence
from torchprune_flows.pruning import count_parameters, prune

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
exact = flow.log_prob(x, divergence="exact")
samples = flow.sample(8, generator=torch.Generator().manual_seed(3))
torch.save({"own": own, "exact": exact, "samples": samples}, sys.argv[3])
"""

CASES = [("ffjord_l4_h64_sigmoid_da", 2), ("ffjord_l1_hm4_f3_softplus_high_tol", 6)]


@pytest.mark.parametrize("name,dim", CASES, ids=[c[0] for c in CASES])
def test_exported_pruned_flow_matches_without_the_package(tmp_path, name, dim):
    torch.manual_seed(0)
    net = tf.build_network(name, num_classes=dim)
    prune(net, "FT", 0.2, count_parameters(net))
    path = tf.export_flow(net, str(tmp_path / "flow.pt"))
    x = torch.randn(32, dim, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", STANDALONE_SCRIPT, path, str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
                   check=True, cwd=tmp_path)
    got = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        torch.manual_seed(2)
        own = net.log_prob(x)  # the network's own estimator (Hutchinson), the same probes
        with with_divergence(net, "exact"):
            exact = net.log_prob(x)
    expected_samples = net.sample(8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got["own"], own, rtol=1e-5, atol=0), (got["own"] - own).abs().max()
    assert torch.allclose(got["exact"], exact, rtol=1e-5, atol=0), (got["exact"] - exact).abs().max()
    assert torch.allclose(got["samples"], expected_samples, rtol=1e-5, atol=1e-6)


def test_export_refuses_flows_it_cannot_write(tmp_path):
    net = tf.build_network("ffjord_multiscale_mnist", num_classes=10, num_in_channels=1, image_size=8,
                           hidden=(4,), blocks=1)
    with pytest.raises(NotImplementedError, match="CNF blocks only"):
        tf.export_flow(net, str(tmp_path / "flow.pt"))


def test_the_export_command_on_a_finished_run(cascade_run, tmp_path):
    from torchprune_flows.runner.analyze import main
    from torchprune_flows.runner.runs import RunFolder

    _, out, rc = cascade_run
    assert rc == 0
    path = str(tmp_path / "ft.pt")
    assert main(["export", out, "--method", "FT", "--keep", "0.3", "--out", path]) == 0
    exported = torch.load(path, weights_only=True)
    namespace = {}
    exec(exported["loader"], namespace)
    flow = namespace["StandaloneFlow"](exported)
    run = RunFolder.open(out)
    net = run.load_network(run.select("FT", 0.3))
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), with_divergence(net, "exact"):
        expected = net.log_prob(x)
    assert torch.allclose(flow.log_prob(x, divergence="exact").to(expected), expected, rtol=1e-5, atol=1e-5)
    assert sum(t.numel() for block in exported["blocks"] for layer in block["layers"] for t in layer.values()
               if torch.is_tensor(t)) < sum(p.numel() for p in net.parameters())  # compacted
