"""Sparse (CSR) kernels for WT-masked layers in the one-pass Hutchinson path: the same values and
gradients as the dense kernels (float64), chosen only where they pay, rebuilt when the mask changes."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from torchprune_flows.cnf import CNF, SolverSpec
from torchprune_flows.cnf import affine_hutchinson as ah
from torchprune_flows.networks.concatsquash import ConcatSquashField
from torchprune_flows.networks.mlp import MLPField
from torchprune_flows.pruning.masks import set_mask

WIDE = 300  # >= SPARSE_MIN_WIDTH: the hidden-to-hidden layer is wide on both sides


def _field(kind, dim=4, hidden=WIDE, layers=3, density=0.02, seed=0):
    """A float64 field with every main Linear masked at random: the wide one at ``density``."""
    torch.manual_seed(seed)
    field = (ConcatSquashField(dim, hidden, layers, "softplus") if kind == "concatsquash"
             else MLPField(dim, hidden, layers, "tanh")).double()
    with torch.no_grad():  # gates away from 1/2 and non-zero shifts, so that time matters
        for p in field.parameters():
            p.add_(0.3 * torch.randn_like(p))
    with torch.no_grad():  # (the masked weight attributes without a graph: deepcopy takes them)
        for linear in _linears(field):
            wide = min(linear.weight.shape) >= WIDE
            set_mask(linear, "weight", torch.rand_like(linear.weight) < (density if wide else 0.5))
    return field


def _linears(field):
    if isinstance(field, ConcatSquashField):
        return [layer.main for layer in field.layers]
    return [m for m in field.net if isinstance(m, torch.nn.Linear)]


def _kernels(field, z):
    return ["sparse" if ah.pattern_of(layer) is not None else "dense" for layer in field.as_affine_stack(0.3, z)[0]]


@pytest.fixture
def sparse_on(monkeypatch):
    monkeypatch.setattr(ah, "SPARSE_KERNELS", True)


def test_the_kernel_is_sparse_only_for_wide_layers_at_high_sparsity(sparse_on, monkeypatch):
    field = _field("concatsquash")
    z = torch.randn(3, 4, dtype=torch.double)
    assert _kernels(field, z) == ["dense", "sparse", "dense"]  # 4 -> 300 and 300 -> 4 are narrow
    dense_again = _field("concatsquash", density=0.3)
    assert _kernels(dense_again, z) == ["dense", "dense", "dense"]
    assert _kernels(_field("concatsquash", hidden=64), z) == ["dense"] * 3  # too narrow (the toy nets)
    unmasked = ConcatSquashField(4, WIDE, 3, "softplus").double()
    assert _kernels(unmasked, z) == ["dense"] * 3
    assert _kernels(_field("concatsquash").float(), z.float()) == ["dense", "sparse", "dense"]
    monkeypatch.setattr(ah, "SPARSE_KERNELS", False)
    assert _kernels(field, z) == ["dense"] * 3


def test_the_pattern_is_built_once_per_mask(sparse_on):
    field = _field("concatsquash")
    main = field.layers[1].main
    z = torch.randn(3, 4, dtype=torch.double)
    first = ah.pattern_of(field.as_affine_stack(0.1, z)[0][1])
    assert ah.pattern_of(field.as_affine_stack(0.7, z)[0][1]) is first  # cached
    assert first.nnz == int(main.weight_mask.count_nonzero())
    set_mask(main, "weight", torch.rand_like(main.weight) < 0.5)  # pruned again: a new mask
    second = ah.pattern_of(field.as_affine_stack(0.1, z)[0][1])
    assert second is not first and second.nnz == int(main.weight_mask.count_nonzero())
    with torch.no_grad():  # changed in place
        main.weight_mask[main.weight_mask != 0] = 0
        main.weight_mask[0, :3] = 1
    third = ah.pattern_of(field.as_affine_stack(0.1, z)[0][1])
    assert third is not second and third.nnz == 3
    with torch.no_grad():
        main.weight_mask.fill_(1)  # now dense
    assert ah.pattern_of(field.as_affine_stack(0.1, z)[0][1]) is None


def test_the_pattern_is_the_masks_csr_structure():
    mask = torch.rand(7, 5) < 0.4
    weight = torch.randn(7, 5, dtype=torch.double) * mask
    pattern = ah.SparsePattern(mask)
    values = pattern.values(weight)
    torch.testing.assert_close(pattern.matrix(values).to_dense(), weight, rtol=0, atol=0)
    torch.testing.assert_close(pattern.transposed(values).to_dense(), weight.t(), rtol=0, atol=0)
    torch.testing.assert_close(pattern.dense(values), weight, rtol=0, atol=0)
    torch.testing.assert_close(pattern.row_sums(values), weight.sum(1), rtol=0, atol=1e-15)


def _values_and_gradients(field, sparse, monkeypatch, t, z, probe):
    monkeypatch.setattr(ah, "SPARSE_KERNELS", sparse)
    field = copy.deepcopy(field)
    zz = z.clone().requires_grad_(True)
    layers, activations = field.as_affine_stack(t, zz)
    assert any(ah.pattern_of(layer) is not None for layer in layers) == sparse
    f, div = ah.field_and_hutchinson(layers, activations, zz, probe)
    loss = (f * torch.linspace(-1, 1, f.shape[1], dtype=f.dtype)).sum() + (div * div).sum()
    params = [zz] + list(field.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        f0, div0 = ah.field_and_hutchinson(*field.as_affine_stack(t, z), z, probe)
    return [f.detach(), div.detach(), f0, div0], grads


@pytest.mark.parametrize("kind", ["concatsquash", "mlp"])
@pytest.mark.parametrize("density", [0.003, 0.04])
def test_values_and_gradients_equal_the_dense_kernels(kind, density, monkeypatch):
    field = _field(kind, density=density)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, dtype=torch.double, generator=gen)
    probe = torch.randn(6, 4, dtype=torch.double, generator=gen)
    t = torch.tensor(0.4, dtype=torch.double)
    values_s, grads_s = _values_and_gradients(field, True, monkeypatch, t, z, probe)
    values_d, grads_d = _values_and_gradients(field, False, monkeypatch, t, z, probe)
    for a, b in zip(values_s, values_d):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_s, grads_d):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    wide = _linears(field)[1]
    orig_grad = grads_s[1 + [id(p) for p in field.parameters()].index(id(wide.weight_orig))]
    assert torch.count_nonzero(orig_grad[wide.weight_mask == 0]) == 0


def _cnf_loss_and_grads(field, sparse, monkeypatch, **solver):
    monkeypatch.setattr(ah, "SPARSE_KERNELS", sparse)
    block = CNF(copy.deepcopy(field), divergence="hutchinson",
                solver=SolverSpec(atol=1e-8, rtol=1e-8, **solver), train_end_time=True).double()
    x = torch.randn(8, 4, dtype=torch.double, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(4)  # the same probe
    z, delta_logp = block(x)
    loss = (0.5 * z.pow(2).sum(1) + delta_logp).mean()
    loss.backward()
    return loss.detach(), [p.grad for p in block.parameters()], (block.nfe_forward, block.nfe_backward)


@pytest.mark.parametrize("solver", [dict(adjoint=True), dict(adjoint=True, seminorm=False), dict(adjoint=False)])
def test_a_cnf_block_trains_the_same_with_sparse_kernels(solver, monkeypatch):
    """Adjoint (the hand-written vector-Jacobian products) and backprop through the solver."""
    field = _field("concatsquash", density=0.02)
    loss_s, grads_s, nfe_s = _cnf_loss_and_grads(field, True, monkeypatch, **solver)
    loss_d, grads_d, nfe_d = _cnf_loss_and_grads(field, False, monkeypatch, **solver)
    assert nfe_s == nfe_d
    torch.testing.assert_close(loss_s, loss_d, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_s, grads_d):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_an_environment_variable_switches_them_off():
    code = "import torchprune_flows.cnf.affine_hutchinson as ah; print(ah.SPARSE_KERNELS)"
    env = dict(os.environ, TORCHPRUNE_FLOWS_SPARSE_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False"
