"""Hessian analysis: HVP estimators against dense Hessians, pruned coordinates, seeds, and the CLI.

The dense references are ``torch.autograd.functional.hessian`` of the loss as a function of the
flat vector of kept coordinates, built here from the network's own parameters and masks (through
``torch.func.functional_call``), independently of :class:`KeptParameters`. The toy CNFs integrate
with fixed-step rk4 (2 steps) and backprop in float64, so the HVP estimates agree with the dense
matrices up to rounding: tolerances are 1e-8 relative for exact identities and 1e-6 for Lanczos.
"""
import csv
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

import torchprune_flows as tf
from torchprune_flows.runner.commands import main
from torchprune_flows.analysis.hessian import (HessianOperator, condition_number, dense_hessian, hessian_summary,
                                               hutchinson_trace, lambda_max, positive_threshold, slq_spectrum)
from torchprune_flows.cnf.cnf import set_solver
from torchprune_flows.objectives import nll_nats
from torchprune_flows.pruning import count_parameters, prune
from torchprune_flows.pruning.masks import set_mask

pytestmark = pytest.mark.usefixtures("torch_single_thread")

DATA = 1.5 * torch.randn(24, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
TARGET = torch.randn(24, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
FIELD = "chain.0.odefunc.vector_field.net"


def toy_flow(name="cnf_l2_h4_tanh_rk4_autograd", seed=0):
    """2-D CNF, 2 Linear layers of 4 hidden units (22 parameters), rk4 with 2 steps, float64."""
    torch.manual_seed(seed)
    net = tf.build_network(name, num_classes=2, step_size=0.5).double()
    set_solver(net, adjoint=False)
    return net


def tiny_mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).double()


def flow_loss(output):
    return nll_nats(output)


def mlp_loss(output):
    return ((output - TARGET) ** 2).mean()


def reference_hessian(net, loss, kept_only=True):
    """Dense Hessian of ``loss(net(DATA))`` w.r.t. the flat trainable coordinates, via
    ``torch.autograd.functional.hessian``; ``kept_only`` drops the entries whose mask is 0.

    Returns ``(H, names, sizes)`` with coordinates in ``named_parameters`` order.
    """
    modules = dict(net.named_modules())
    entries = []  # (parameter name, parameter, kept flat indices or None)
    for name, param in net.named_parameters():
        module_name, _, leaf = name.rpartition(".")
        mask = getattr(modules[module_name], leaf[:-5] + "_mask", None) if leaf.endswith("_orig") else None
        index = None if mask is None or not kept_only else torch.nonzero(mask.reshape(-1)).flatten()
        entries.append((name, param, index))
    sizes = [p.numel() if i is None else len(i) for _, p, i in entries]

    def loss_of(theta):
        params = {}
        for (name, param, index), part in zip(entries, torch.split(theta, sizes)):
            full = part if index is None else param.detach().reshape(-1).index_put((index,), part)
            params[name] = full.reshape(param.shape)
        return loss(functional_call(net, params, (DATA,)))

    theta = torch.cat([p.detach().reshape(-1) if i is None else p.detach().reshape(-1)[i] for _, p, i in entries])
    hessian = torch.autograd.functional.hessian(loss_of, theta)
    names = [n[:-5] if n.endswith("_orig") else n for n, _, _ in entries]
    return hessian, names, sizes


def rademacher_probes(dim, count, seed):
    """The documented probe protocol of ``hutchinson_trace`` / ``slq_spectrum``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2, (dim,), generator=generator, dtype=torch.float64) * 2 - 1 for _ in range(count)]


def kappa_of(eigenvalues, rtol):
    top = eigenvalues.max()
    return float(top / eigenvalues[eigenvalues > rtol * top].min())


@pytest.mark.parametrize("model", ["mlp", "cnf"])
def test_estimates_match_the_dense_hessian(model):
    net, loss = (tiny_mlp(), mlp_loss) if model == "mlp" else (toy_flow(), flow_loss)
    op = HessianOperator(net, lambda: loss(net(DATA)), seed=0)
    dense, names, _ = reference_hessian(net, loss)
    assert op.dim == dense.shape[0] == count_parameters(net)
    assert op.kept.names == names
    assert op.loss == pytest.approx(float(loss(net(DATA)).detach()), rel=1e-12)
    exact = torch.linalg.eigvalsh(dense)
    scale = float(exact.abs().max())
    # every HVP is the dense matrix times the vector
    assert torch.allclose(dense_hessian(op), dense, rtol=0, atol=1e-10 * scale)

    # λmax: Lanczos with the default tolerance, within 1e-3 relative (in practice ~1e-8)
    assert lambda_max(op, iters=100, tol=1e-4, seed=0) == pytest.approx(float(exact[-1]), rel=1e-3)

    # trace: each sample is v^T H v for the documented probes, and the mean is within 4 SE of tr(H)
    estimate = hutchinson_trace(op, probes=20, seed=5)
    forms = torch.tensor([float(v @ dense @ v) for v in rademacher_probes(op.dim, 20, 5)], dtype=torch.float64)
    assert torch.allclose(estimate.samples, forms, rtol=1e-8, atol=1e-10 * scale)
    assert estimate.stderr > 0
    assert abs(estimate.mean - float(dense.trace())) <= 4 * estimate.stderr

    # SLQ with iters = dim: the Ritz values are the eigenvalues, so κ is exact
    spectrum = slq_spectrum(op, probes=1, iters=op.dim, seed=1)
    for nodes, weights in zip(spectrum.nodes, spectrum.weights):
        assert float(weights.sum()) == pytest.approx(1.0, rel=1e-10)
        assert float(nodes.max()) == pytest.approx(float(exact[-1]), rel=1e-3)
        positive = exact[exact > positive_threshold(torch.float64) * exact[-1]]
        assert float(nodes[nodes > positive_threshold(torch.float64) * nodes.max()].min()) == pytest.approx(
            float(positive.min()), rel=1e-3)
    kappa = condition_number(spectrum)
    assert kappa == pytest.approx(kappa_of(exact, positive_threshold(torch.float64)), rel=1e-3)
    assert kappa > 1


@pytest.mark.parametrize("method", ["WT", "FT"])
def test_pruned_coordinates_are_excluded(method):
    net = toy_flow()
    prune(net, method, 0.5, count_parameters(net))
    op = HessianOperator(net, lambda: flow_loss(net(DATA)), seed=0)
    kept_entries = sum(int((getattr(m, n[:-5] + "_mask") != 0).sum()) if n.endswith("_orig") else p.numel()
                       for m in net.modules() for n, p in m.named_parameters(recurse=False))
    assert op.dim == kept_entries < count_parameters(net)

    # the operator is the dense Hessian over all coordinates restricted to the kept ones ...
    full, _, _ = reference_hessian(net, flow_loss, kept_only=False)
    kept_mask = torch.cat([(getattr(m, n[:-5] + "_mask") != 0).reshape(-1) if n.endswith("_orig")
                           else torch.ones(p.numel(), dtype=torch.bool)
                           for m in net.modules() for n, p in m.named_parameters(recurse=False)])
    restricted = full[kept_mask][:, kept_mask]
    # ... which is also the Hessian of the loss as a function of the kept coordinates alone
    kept, _, _ = reference_hessian(net, flow_loss)
    scale = float(kept.abs().max())
    assert torch.allclose(restricted, kept, rtol=0, atol=1e-10 * scale)
    assert torch.allclose(dense_hessian(op), kept, rtol=0, atol=1e-10 * scale)
    exact = torch.linalg.eigvalsh(kept)
    assert lambda_max(op, seed=2) == pytest.approx(float(exact[-1]), rel=1e-3)
    estimate = hutchinson_trace(op, probes=8, seed=0)
    forms = torch.tensor([float(v @ kept @ v) for v in rademacher_probes(op.dim, 8, 0)], dtype=torch.float64)
    assert torch.allclose(estimate.samples, forms, rtol=1e-8, atol=1e-10 * scale)

    # vectors are zero at pruned coordinates
    pieces = op.kept.scatter(torch.ones(op.dim, dtype=torch.float64))
    for piece, param, index in zip(pieces, op.kept.params, op.kept.indices):
        if index is not None:
            module = next(m for m in net.modules() if any(p is param for p in m.parameters(recurse=False)))
            mask = getattr(module, [n for n, p in module.named_parameters(recurse=False) if p is param][0][:-5] + "_mask")
            assert torch.equal(piece != 0, mask != 0)


def test_a_fully_pruned_layer_contributes_nothing():
    net = toy_flow()
    first = dict(net.named_modules())[f"{FIELD}.0"]
    set_mask(first, "weight", torch.zeros_like(first.weight, dtype=torch.bool))
    op = HessianOperator(net, lambda: flow_loss(net(DATA)), seed=0)
    sizes = dict(zip(op.kept.names, op.kept.sizes))
    assert sizes[f"{FIELD}.0.weight"] == 0
    assert op.dim == count_parameters(net) - first.weight.numel()

    full, names, sizes_all = reference_hessian(net, flow_loss, kept_only=False)
    layer = torch.cat([torch.full((s,), n == f"{FIELD}.0.weight") for n, s in zip(names, sizes_all)])
    without = full[~layer][:, ~layer]
    scale = float(without.abs().max())
    dense = dense_hessian(op)
    assert torch.allclose(dense, without, rtol=0, atol=1e-10 * scale)
    assert float(dense.trace()) == pytest.approx(float(without.trace()), rel=1e-8)
    estimate = hutchinson_trace(op, probes=6, seed=3)
    forms = [float(v @ without @ v) for v in rademacher_probes(op.dim, 6, 3)]
    assert estimate.mean == pytest.approx(sum(forms) / 6, rel=1e-8)
    assert lambda_max(op, seed=0) == pytest.approx(float(torch.linalg.eigvalsh(without)[-1]), rel=1e-3)


def test_same_seed_is_bitwise_identical_and_the_rng_is_restored():
    net = toy_flow("ffjord_l2_h4_tanh_rk4_autograd")  # Hutchinson divergence: probes drawn in the flow

    def summary(seed):
        return hessian_summary(net, lambda: flow_loss(net(DATA)), probes=5, iters=5, seed=seed, slq_probes=2)

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = summary(0)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    second = summary(0)
    assert first == second  # bitwise: floats compared with ==
    assert all(math.isfinite(first[k]) for k in ("lambda_max", "trace", "trace_stderr", "condition_number"))
    assert first["dim"] == count_parameters(net)
    other = summary(1)
    assert other["trace"] != first["trace"]
    assert other["loss"] != first["loss"]  # the flow's own probes follow the seed too


def test_cli_writes_the_table(cascade_run, tmp_path, capsys):
    _, out, rc = cascade_run
    assert rc == 0
    args = ["hessian", out, "--samples", "64", "--probes", "4", "--iters", "10", "--slq-probes", "1",
            "--out", str(tmp_path)]
    assert main(args) == 0
    with open(tmp_path / "hessian.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 + 2 * 2
    assert [r["method"] for r in rows] == ["ReferenceNet"] + ["ThresNet"] * 2 + ["FilterThresNet"] * 2
    assert [float(r["prune_ratio"]) for r in rows[1:3]] == pytest.approx([0.4, 0.7])
    for row in rows:
        assert row["model"] == "cnf_l2_h16_tanh_high_tol"
        assert math.isfinite(float(row["lambda_max"])) and float(row["lambda_max"]) > 0
        assert math.isfinite(float(row["trace"])) and math.isfinite(float(row["nll_subset"]))
    kept = [int(r["kept_parameters"]) for r in rows]
    assert kept[0] == 82 and all(k < 82 for k in kept[1:])
    table = (tmp_path / "hessian.md").read_text()
    assert "| Model | Prune ratio | NLL | λmax(H) | tr(H) | κ(H) |" in table
    assert "| Sparse WT cnf_l2_h16_tanh_high_tol | 70% |" in table
    assert table.strip() in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--methods", "XYZ"], "XYZ"),
    (["--nets", "5"], "net 5"),
    (["--samples", "0"], "--samples"),
])
def test_cli_bad_selection_is_one_line_and_exit_2(cascade_run, tmp_path, capsys, args, message):
    _, out, _ = cascade_run
    assert main(["hessian", out, *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "hessian.csv").exists()
