"""The contract every registered network family meets, run on each family's registry examples.

Flows (anything with ``log_prob``, ``sample`` and ``inverse``): finite log-density, a gradient on
every parameter from the NLL, sample -> latent round trip, identical log-density after a
state_dict save/load, WT and FT reaching their keep ratios with the structural invariants and
surviving export/import of the pruned state, compaction of the FT-pruned flow keeping its
log-density, the exported standalone file (:func:`torchprune_flows.export_flow`) giving the same
log-densities and samples, and, where the data dimension is small, the log-density against
log N(z) - log|det d inverse / dz| from a brute-force autograd Jacobian. Neural-ODE classifiers
are not flows: they get the checks that apply (finite outputs, gradients, save/load, pruning,
compaction). A family that cannot be compacted or exported is listed, with the reason, in
:data:`NOT_COMPACTABLE` / :data:`NOT_EXPORTABLE`, and must refuse with that reason.

A family registered without examples fails here: it would otherwise go untested.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from torchprune_flows import compact, export_flow
from torchprune_flows.cnf import cnf_blocks, set_solver, standard_normal_logprob, without_divergence
from torchprune_flows.pruning import (count_nonzero, count_parameters, export_state, get_masks, import_state,
                                      method_names, prunable_layers, prune, pruning_method, structured_chains,
                                      unit_companions)
from torchprune_flows.pruning.masks import refresh_pruned_tensors
from torchprune_flows.registry import NETWORKS
from torchprune_flows.registry.plugins import load_plugins

#: a vector-field family from a plugin file (the README's example), registered as --plugin does
PLUGIN_FAMILY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "my_flows.py")
#: and a third pruning method from a plugin file (random unstructured pruning)
PLUGIN_METHOD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "random_pruning.py")
load_plugins([PLUGIN_FAMILY, PLUGIN_METHOD])
#: every family (template or sized exact name) and its examples, listed at import, i.e. before any
#: test registers a network of its own
FAMILIES = NETWORKS.families()
EXAMPLES = [pytest.param(example, id=example.name) for examples in FAMILIES.values() for example in examples]
#: example name -> its family's entry (a key of FAMILIES)
FAMILY_OF = {example.name: entry for entry, examples in FAMILIES.items() for example in examples}
#: families whose networks compaction refuses: entry -> the reason the error names (none today)
NOT_COMPACTABLE = {}
#: families whose networks export refuses: entry -> the reason the error names
NOT_EXPORTABLE = {
    "node_l{num_linear_layers:d}_h{hidden_width:d}_{activation}[_{suffix:*}]":
        "export supports flows made of CNF blocks .* NeuralODEClassifier is not one",  # a classifier: no density
    # the plugin's own field kind: the standalone loader (self-contained) only knows the package's kinds
    "myflow_h{hidden:d}": "export supports the vector fields .* not Field",
}
#: brute-force Jacobians only up to this data dimension
JACOBIAN_MAX_DIM = 8
KEEP_RATIO = 0.5
BATCH = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread(torch_single_thread):
    yield


def build(example, seed=0):
    torch.manual_seed(seed)
    return NETWORKS.build(example.name, **example.kwargs)


def is_flow(net):
    return all(callable(getattr(net, name, None)) for name in ("log_prob", "sample", "inverse"))


def input_shape(net):
    """One sample's shape: a flow's ``data_shape``, else the first prunable layer's inputs."""
    if hasattr(net, "data_shape"):
        return tuple(net.data_shape)
    return (prunable_layers(net)[0].in_features,)


def inputs(net, n=BATCH, seed=1):
    generator = torch.Generator().manual_seed(seed)
    shape = (n, *input_shape(net))
    if len(shape) == 4:  # images: values in (0, 1)
        return torch.rand(shape, generator=generator).clamp(0.05, 0.95)
    return torch.randn(shape, generator=generator)


def latent(net, x):
    """The flow's latent for ``x``: the one place this file reads what ``forward`` returns."""
    out = net(x)
    if torch.is_tensor(out):
        return out
    if isinstance(out, dict):
        return out["z"]
    return out.z if hasattr(out, "z") else out[0]


def log_density(net, x, seed=2):
    """``net.log_prob(x)`` with the Hutchinson probes fixed by ``seed``."""
    torch.manual_seed(seed)
    return net.log_prob(x)


def outputs(net, x, seed=2):
    """What the network computes for ``x``: log-densities of flows, the outputs of others."""
    return log_density(net, x, seed) if is_flow(net) else net(x)


def _examples_where(condition):
    """The examples whose built network satisfies ``condition(net)`` (decided at collection)."""
    return [param for param in EXAMPLES if condition(build(param.values[0]))]


FLOWS = _examples_where(is_flow)
#: flows small enough for the brute-force Jacobian
SMALL = _examples_where(lambda net: is_flow(net) and math.prod(input_shape(net)) <= JACOBIAN_MAX_DIM)


@pytest.mark.parametrize("entry", list(FAMILIES))
def test_every_family_has_examples(entry):
    assert FAMILIES[entry], f"network family '{entry}' has no examples: register it with examples=[...]"


def test_the_contract_covers_every_kind_of_built_in_network():
    names = [p.values[0].name for p in EXAMPLES]
    for prefix in ("ffjord_l", "cnf_l", "node_l", "ffjord_multiscale_mnist", "ffjord_multiscale_cifar"):
        assert any(name.startswith(prefix) for name in names), prefix
    assert any("_hm" in name for name in names)  # the tabular family
    assert "myflow_h8" in names  # the plugin's family


@pytest.mark.parametrize("example", EXAMPLES)
def test_outputs_are_finite_and_every_parameter_gets_a_gradient(example):
    net = build(example)
    x = inputs(net)
    if is_flow(net):
        logp = log_density(net, x)
        assert logp.shape == (len(x),) and torch.isfinite(logp).all()
        loss = -logp.mean()
    else:
        logits = net(x)
        assert logits.shape == (len(x), input_shape(net)[0]) and torch.isfinite(logits).all()
        loss = F.cross_entropy(logits, torch.arange(len(x)) % logits.shape[1])
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, f"{name}: {param.grad}"


@pytest.mark.parametrize("example", FLOWS)
def test_sampling_inverts_the_flow(example):
    net = build(example)
    z = torch.randn(BATCH, *input_shape(net), generator=torch.Generator().manual_seed(3))
    tolerance = 20 * max(block.solver.atol for block in cnf_blocks(net))
    with torch.no_grad():
        x = net.sample(BATCH, z=z)
        assert x.shape == z.shape and torch.isfinite(x).all()
        # sampling skips the divergence; the states agree up to the solver's tolerance
        assert (net.inverse(z) - x).abs().max() < tolerance
        back = latent(net, x).reshape(z.shape)
    assert (back - z).abs().max() < tolerance
    assert (x - z).abs().max() > 10 * tolerance  # the flow is not the identity


@pytest.mark.parametrize("example", EXAMPLES)
def test_state_dict_round_trip_gives_identical_outputs(example, tmp_path):
    net, other = build(example, seed=0), build(example, seed=5)
    x = inputs(net)
    with torch.no_grad():
        expected = outputs(net, x)
        assert not torch.allclose(outputs(other, x), expected)  # differently initialised
        torch.save(net.state_dict(), tmp_path / "net.pt")
        other.load_state_dict(torch.load(tmp_path / "net.pt"))
        assert torch.equal(outputs(other, x), expected)


def _unit_entries(chains):
    """The most entries one unit of a chain holds: its row, its bias and the next layer's column."""
    sizes = [producer.weight[0].numel() + (producer.bias is not None) + consumer.weight[:, 0].numel()
             for chain in chains for (producer, _), (consumer, _) in zip(chain[:-1], chain[1:])]
    return max(sizes + [1])


#: every registered pruning method, the plugin's included
METHODS = [pruning_method(name) for name in method_names()]


def test_the_plugin_method_and_both_built_in_methods_are_covered():
    assert {m.label for m in METHODS} >= {"WT", "FT", "RP"}


@pytest.mark.parametrize("method", [m.name for m in METHODS], ids=[m.label for m in METHODS])
@pytest.mark.parametrize("example", EXAMPLES)
def test_pruning_reaches_the_keep_ratio_and_keeps_the_structure(example, method):
    net = build(example)
    original = count_parameters(net)
    layers = prunable_layers(net)
    chains = structured_chains(net)
    companions = unit_companions(net)  # time-only modules whose rows are a layer's units
    layer_ids = {id(layer) for layer in layers}
    companion_ids = {id(m) for layer in layers for m in companions.get(id(layer), [])}
    fixed = {name: p.detach().clone() for module_name, module in net.named_modules()
             if id(module) not in layer_ids | companion_ids
             for name, p in module.named_parameters(prefix=module_name, recurse=False)}
    time_before = {id(layer): [m.weight.detach().clone() for m in companions.get(id(layer), [])] for layer in layers}

    achieved = prune(net, method, KEEP_RATIO, original)

    assert achieved == count_nonzero(net) / original
    assert abs(achieved - KEEP_RATIO) * original <= max(0.005 * KEEP_RATIO * original, _unit_entries(chains))
    masks = get_masks(net)
    modules = dict(net.named_modules())
    masked_modules = {modules[key.rpartition(".")[0]] for key in masks}
    assert masked_modules and all(id(module) in layer_ids | companion_ids for module in masked_modules)
    for name, param in net.named_parameters():  # everything outside the prunable layers is untouched
        if name in fixed:
            assert torch.equal(param, fixed[name]), name
    refresh_pruned_tensors(net)
    for layer in layers:  # time-only companions: kept with a kept unit, removed with a removed one
        removed = (layer.weight.reshape(len(layer.weight), -1) == 0).all(dim=1)
        if layer.bias is not None:
            removed &= layer.bias == 0
        for module, before in zip(companions.get(id(layer), []), time_before[id(layer)]):
            assert torch.equal(module.weight[~removed], before[~removed]), "a kept unit lost a time weight"
            assert not module.weight[removed].any(), "a removed unit kept its time weights"
    for chain in chains:
        last, _ = chain[-1]
        bias_mask = getattr(last, "bias_mask", None)
        assert bias_mask is None or bias_mask.bool().all(), "an output unit of a block was removed"
        for layer, time_inputs in chain:  # a unit that is kept keeps its weights reading time
            weight_mask = getattr(layer, "weight_mask", torch.ones_like(layer.weight)).bool()
            kept_units = weight_mask.reshape(len(weight_mask), -1).any(dim=1)
            assert weight_mask[kept_units, :time_inputs].all(), "a weight reading time was pruned"
        if pruning_method(method).structured:
            rows = getattr(last, "weight_mask", torch.ones_like(last.weight)).reshape(last.weight.shape[0], -1)
            assert rows.bool().any(dim=1).all(), "FT cut an output unit off from its inputs"
    x = inputs(net)
    with torch.no_grad():
        pruned = outputs(net, x)
        assert torch.isfinite(pruned).all()
        restored = import_state(build(example, seed=7), export_state(net))
        assert count_nonzero(restored) == count_nonzero(net)
        assert {k: v.tolist() for k, v in get_masks(restored).items()} == {k: v.tolist() for k, v in masks.items()}
        assert torch.equal(outputs(restored, x), pruned)


def test_flows_and_small_flows_are_found():
    flows = {param.values[0].name for param in FLOWS}
    for param in EXAMPLES:  # every example is a flow except the neural-ODE classifiers
        name = param.values[0].name
        assert (name in flows) == (not name.startswith("node_")), name
    small = [param.values[0].name for param in SMALL]  # toy flows and the tabular flow
    assert any(name.startswith("cnf_") for name in small) and any("_hm" in name for name in small)


@pytest.mark.parametrize("example", SMALL)
def test_log_density_matches_a_brute_force_jacobian(example):
    """log p(x) = log N(z) - log|det dx/dz| at x = inverse(z), with the exact divergence."""
    net = build(example).double()
    for block in cnf_blocks(net):
        block.odefunc.divergence = "exact"
    set_solver(net, method="dopri5", atol=1e-10, rtol=1e-10, adjoint=False)
    z = torch.randn(BATCH, *input_shape(net), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with without_divergence(net):
        x = net.inverse(z).detach()
        log_det = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(
            lambda zi: net.inverse(zi.unsqueeze(0))[0], zi)).logabsdet for zi in z])
    expected = standard_normal_logprob(z) - log_det
    actual = net.log_prob(x).detach()
    assert log_det.abs().min() > 1e-3  # a real change of volume, not the identity
    assert torch.allclose(actual, expected, atol=1e-6, rtol=0), (actual, expected)


def _ft_pruned(example):
    net = build(example)
    prune(net, "FT", KEEP_RATIO, count_parameters(net))
    return net


def test_the_not_compactable_and_not_exportable_lists_name_registered_families():
    for entry in [*NOT_COMPACTABLE, *NOT_EXPORTABLE]:
        assert entry in FAMILIES, f"'{entry}' is listed but not a registered family"


@pytest.mark.parametrize("example", EXAMPLES)
def test_compaction_keeps_the_outputs(example):
    net = _ft_pruned(example)
    x = inputs(net)
    if FAMILY_OF[example.name] in NOT_COMPACTABLE:
        with pytest.raises(NotImplementedError, match=NOT_COMPACTABLE[FAMILY_OF[example.name]]):
            compact(net)
        return
    with torch.no_grad():
        expected = outputs(net, x)
        small = compact(net)
        got = outputs(small, x)  # the same probes: compaction keeps every block's data dimension
        assert torch.equal(outputs(net, x), expected)  # the pruned network is unchanged
    # physically smaller by exactly the entries FT removed (whole units, their rows and columns)
    assert count_parameters(small) == count_nonzero(net) < count_parameters(net)
    assert not get_masks(small)
    # the same function; an adaptive solver's step decisions may differ by rounding
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3), (got - expected).abs().max()


def _load_standalone(path):
    """The exported file read as a user without the package would (in this process, for speed;
    tests/test_export.py runs it where the package cannot be imported)."""
    exported = torch.load(path, weights_only=True)
    namespace = {}
    exec(exported["loader"], namespace)
    return namespace["StandaloneFlow"](exported)


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_exported_standalone_flow_gives_the_same_log_density(example, tmp_path):
    net = _ft_pruned(example)
    path = str(tmp_path / "flow.pt")
    if FAMILY_OF[example.name] in NOT_EXPORTABLE:
        with pytest.raises(NotImplementedError, match=NOT_EXPORTABLE[FAMILY_OF[example.name]]):
            export_flow(net, path)
        assert not os.listdir(tmp_path)
        return
    flow = _load_standalone(export_flow(net, path))
    x = inputs(net)
    z = torch.randn(BATCH, *input_shape(net), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, expected_samples = log_density(net, x), net.sample(BATCH, z=z)
    torch.manual_seed(2)  # the probes log_density draws
    got = flow.log_prob(x)
    # the loader integrates with torchdiffeq, whose steps our native solver takes up to rounding
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3), (got - expected).abs().max()
    samples = flow.sample(BATCH, z=z)
    assert torch.allclose(samples, expected_samples, rtol=1e-3, atol=1e-3), (samples - expected_samples).abs().max()
