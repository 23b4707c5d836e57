"""The torchprune bridge, against a stand-in ``torchprune`` package with the real module layout.

The calls below reproduce how torchprune's experiment runner looks names up (``getattr`` on
``torchprune.util.{models,datasets,nn_loss,metrics}``) and calls them.
"""
import inspect
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import torchprune_flows
from torchprune_flows.registry import REGISTRIES, torchprune_bridge
from torchprune_flows.registry.torchprune_bridge import install_into_torchprune

STAND_IN = {
    "torchprune/__init__.py": """
        class ThresNet:
            pass

        class FilterThresNet:
            pass
    """,
    "torchprune/util/__init__.py": "",
    "torchprune/util/models.py": """
        def resnet20(num_classes=10, **kwargs):
            return "torchprune's resnet20"

        def __getattr__(name):  # a hook of torchprune's own, to check chaining
            if name.startswith("legacy_"):
                return "legacy:" + name
            raise AttributeError(name)
    """,
    "torchprune/util/datasets.py": """
        class ToyMoons:  # torchprune's own class under one of our names: must survive
            origin = "torchprune"
    """,
    "torchprune/util/nn_loss.py": "",
    "torchprune/util/metrics.py": "",
}


def _drop_torchprune_modules():
    for name in [m for m in sys.modules if m == "torchprune" or m.startswith("torchprune.")]:
        del sys.modules[name]


@pytest.fixture
def tp(tmp_path, monkeypatch):
    """Install into a fresh stand-in torchprune; everything is undone afterwards."""
    for rel, source in STAND_IN.items():
        path = tmp_path / "site" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "torchprune" or m.startswith("torchprune.")]:
        monkeypatch.delitem(sys.modules, name)
    # Listeners and test registrations must not outlive the test (restored by monkeypatch).
    for registry in REGISTRIES.values():
        monkeypatch.setattr(registry, "_listeners", list(registry._listeners))
        monkeypatch.setattr(registry, "_exact", dict(registry._exact))
    monkeypatch.setattr(torchprune_bridge, "_listening", [])

    with pytest.warns(UserWarning, match=r"torchprune\.util\.datasets\.ToyMoons"):
        assert install_into_torchprune() is True

    import torchprune.util.datasets as datasets
    import torchprune.util.metrics as metrics
    import torchprune.util.models as models
    import torchprune.util.nn_loss as nn_loss

    yield {"models": models, "datasets": datasets, "nn_loss": nn_loss, "metrics": metrics,
           "root": str(tmp_path)}
    _drop_torchprune_modules()  # modules imported during the test (monkeypatch restores others)


def test_flow_network_loss_and_metrics_as_the_runner_calls_them(tp):
    models, nn_loss, metrics = tp["models"], tp["nn_loss"], tp["metrics"]
    net = getattr(models, "ffjord_l2_h128_sigmoid_da")(num_classes=2)
    assert isinstance(net, nn.Module)
    assert sum(p.numel() for p in net.parameters()) == 642

    x = torch.randn(8, 2)
    out = net(x)
    assert isinstance(out, dict)
    assert out["z"].shape == (8, 2)
    assert out["delta_logp"].shape == (8,)
    targets = torch.zeros(8, dtype=torch.long)

    loss = getattr(nn_loss, "NLLPriorLoss")(**{})(out, targets)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.grad_fn is not None

    metric = getattr(metrics, "NLLPrior")(2)
    value = metric(out, targets)
    assert isinstance(value, float)
    assert value == pytest.approx(-loss.item(), rel=1e-6, abs=1e-6)
    assert metric.short_name
    assert getattr(metrics, "Dummy")(2)(out, targets) == 0.0


def test_node_classifier_topk_and_cross_entropy(tp):
    models, nn_loss, metrics = tp["models"], tp["nn_loss"], tp["metrics"]
    net = getattr(models, "node_l2_h128_tanh_da")(num_classes=2)
    assert isinstance(net, nn.Module)
    logits = net(torch.randn(8, 2))
    assert logits.shape == (8, 2)
    targets = torch.randint(0, 2, (8,))

    loss = getattr(nn_loss, "CrossEntropyLoss")(reduction="mean")(logits, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)

    topk = getattr(metrics, "TopK")(2, topk=1)
    acc = topk(logits, targets)
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert topk.short_name
    assert isinstance(getattr(metrics, "MCorr")(2)(logits, targets), float)


def test_mnist_style_call_with_num_in_channels(tp):
    net = getattr(tp["models"], "cnf_l2_h16_tanh")(num_classes=2, num_in_channels=1)
    assert isinstance(net, nn.Module)


def test_datasets_are_classes_with_the_runner_signature(tp):
    cls = getattr(tp["datasets"], "ToyGaussians")
    assert inspect.isclass(cls)
    data = cls(root=tp["root"], train=True, download=True, transform=None)
    x, y = data[0]
    assert x.shape == (2,)
    assert len(data) > 0


def test_torchprune_attributes_are_kept(tp):
    models, datasets = tp["models"], tp["datasets"]
    assert datasets.ToyMoons.origin == "torchprune"  # not clobbered
    assert models.resnet20() == "torchprune's resnet20"
    assert models.legacy_thing == "legacy:legacy_thing"  # older module __getattr__ still works
    import torchprune

    assert torchprune.ThresNet and torchprune.FilterThresNet


def test_unknown_names_raise_attribute_error(tp):
    models = tp["models"]
    with pytest.raises(AttributeError, match="did you mean"):
        getattr(models, "ffjord_l2_h128")
    with pytest.raises(AttributeError):
        getattr(models, "no_such_network_xyz")
    assert not hasattr(models, "no_such_network_xyz")
    assert getattr(models, "no_such_network_xyz", None) is None
    with pytest.raises(AttributeError):
        models.__wrapped__  # dunder probes must not go through the registry
    with pytest.raises(AttributeError):
        getattr(tp["nn_loss"], "NoSuchLossXYZ")


def test_entries_registered_after_install_are_installed(tp):
    models, metrics = tp["models"], tp["metrics"]

    @torchprune_flows.register_network("my_test_flow_xyz")
    def my_test_flow(num_classes, num_in_channels=None):
        return nn.Linear(num_classes, num_classes)

    assert models.my_test_flow_xyz is my_test_flow
    assert isinstance(getattr(models, "my_test_flow_xyz")(num_classes=3), nn.Linear)

    torchprune_flows.register_network("mytestfam_w{width:d}")(
        lambda width, num_classes, **kw: nn.Linear(width, num_classes))
    assert getattr(models, "mytestfam_w5")(num_classes=2).in_features == 5

    @torchprune_flows.register_metric("MyTestMetricXYZ")
    class MyTestMetric:
        short_name = "mine"

        def __init__(self, output_size, **kwargs):
            pass

    assert metrics.MyTestMetricXYZ is MyTestMetric

    # Re-registering a name the bridge installed replaces it.
    @torchprune_flows.register_metric("MyTestMetricXYZ")
    class MyTestMetric2(MyTestMetric):
        pass

    assert metrics.MyTestMetricXYZ is MyTestMetric2

    # A later registration under a torchprune-owned name leaves torchprune's attribute alone.
    with pytest.warns(UserWarning, match="resnet20"):
        torchprune_flows.register_network("resnet20")(my_test_flow)
    assert models.resnet20() == "torchprune's resnet20"


def test_install_is_idempotent(tp):
    models, datasets = tp["models"], tp["datasets"]
    hook = models.__getattr__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ToyMoons conflict is reported only once
        assert install_into_torchprune() is True
        assert install_into_torchprune() is True
    assert models.__getattr__ is hook  # not wrapped again
    assert datasets.ToyMoons.origin == "torchprune"
    assert inspect.isclass(datasets.ToyGaussians)
    # one listener per registry, however often installed
    assert len(torchprune_bridge._listening) == len(REGISTRIES)
    net = getattr(models, "ffjord_l2_h128_sigmoid_da")(num_classes=2)
    assert sum(p.numel() for p in net.parameters()) == 642


def test_without_torchprune_nothing_happens(monkeypatch):
    for name in [m for m in sys.modules if m == "torchprune" or m.startswith("torchprune.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(torchprune_bridge, "_torchprune_available", lambda: False)
    listeners = {k: list(r._listeners) for k, r in REGISTRIES.items()}
    assert install_into_torchprune() is False
    assert torchprune_bridge.maybe_install_into_torchprune() is False
    assert "torchprune" not in sys.modules
    assert {k: list(r._listeners) for k, r in REGISTRIES.items()} == listeners


def test_leftover_listener_is_harmless_without_torchprune(monkeypatch):
    from torchprune_flows.registry import NETWORKS

    monkeypatch.setattr(NETWORKS, "_exact", dict(NETWORKS._exact))
    listener = torchprune_bridge._make_listener(NETWORKS, "torchprune.util.models")
    monkeypatch.delitem(sys.modules, "torchprune.util.models", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        listener("some_name_xyz", object())  # no module: does nothing, raises nothing


def test_maybe_install_never_raises(monkeypatch):
    def boom():
        raise RuntimeError("broken torchprune")

    monkeypatch.setattr(torchprune_bridge, "install_into_torchprune", boom)
    with pytest.warns(RuntimeWarning, match="broken torchprune"):
        assert torchprune_bridge.maybe_install_into_torchprune() is False
    monkeypatch.setenv("TORCHPRUNE_FLOWS_NO_BRIDGE", "1")
    assert torchprune_bridge.maybe_install_into_torchprune() is False
