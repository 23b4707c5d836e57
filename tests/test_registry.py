"""Registry: decorators, families parsed from templates, listings, close matches, plugins."""
import sys

import pytest

from torchprune_flows.registry import (NETWORKS, PluginImportError, Registry, UnknownNameError, list_entries,
                                       load_plugins)


def test_exact_and_family_entries():
    reg = Registry("network")
    reg.register("plain")(lambda **kw: ("plain", kw))
    reg.register("net_l{layers:d}_h{hidden:d}_{act}[_{suffix:*}]")(lambda **kw: kw)
    assert reg.build("plain", x=1) == ("plain", {"x": 1})
    assert reg.build("net_l3_h64_tanh", extra=2) == {"layers": 3, "hidden": 64, "act": "tanh", "suffix": None,
                                                     "extra": 2}
    assert reg.build("net_l3_h64_tanh_da_high_tol")["suffix"] == "da_high_tol"
    assert "net_l3_h64_tanh" in reg and "net_lx_h64_tanh" not in reg
    assert reg.names() == ["plain", "net_l{layers:d}_h{hidden:d}_{act}[_{suffix:*}]"]


def test_later_family_registrations_take_precedence():
    reg = Registry("network")
    reg.register("a_{x}")(lambda **kw: "first")
    reg.register("a_{x:d}")(lambda **kw: "second")
    assert reg.build("a_12") == "second"
    assert reg.build("a_xy") == "first"


def test_unknown_names_list_close_matches():
    reg = Registry("dataset")
    reg.register("ToyGaussians", object)
    with pytest.raises(UnknownNameError) as err:
        reg.get("ToyGausians")
    assert "unknown dataset 'ToyGausians'; did you mean ToyGaussians?" in str(err.value)
    assert "\n" not in str(err.value)


def test_builtin_listing_covers_every_kind():
    entries = list_entries()
    assert {"ToyGaussians", "ToyGaussiansSpiral", "ToySpirals2", "ToyMoons", "ToyConcentric",
            "ToySpirals"} <= set(entries["dataset"])
    assert {"NLLPriorLoss", "NLLNatsLoss", "NLLBitsLoss", "CrossEntropyLoss"} <= set(entries["loss"])
    assert {"NLLPrior", "NLLNats", "NLLBits", "Dummy", "TopK", "MCorr"} <= set(entries["metric"])
    assert any(n.startswith("ffjord_l") for n in entries["network"])


def test_plugins_register_on_import(tmp_path, monkeypatch):
    (tmp_path / "my_reg_plugin.py").write_text(
        "from torchprune_flows import register_network\n"
        "@register_network('plugin_net_xyz')\n"
        "def plugin_net(num_classes, **kw):\n    return num_classes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_reg_plugin", raising=False)
    load_plugins(["my_reg_plugin"])
    assert NETWORKS.build("plugin_net_xyz", num_classes=3) == 3
    with pytest.raises(PluginImportError, match="cannot import plugin module 'no_such_mod_abc'"):
        load_plugins(["no_such_mod_abc"])


def test_entry_point_plugins_are_imported_on_a_lookup_miss(tmp_path, monkeypatch):
    from torchprune_flows.registry import plugins

    (tmp_path / "ep_flow_plugin.py").write_text(
        "from torchprune_flows import register_network\n"
        "@register_network('entry_point_net_{width:d}')\n"
        "def ep_net(width, num_classes, **kw):\n    return ('ep', width)\n")
    dist = tmp_path / "ep_flow_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-flow-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[torchprune_flows.plugins]\nep = ep_flow_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ep_flow_plugin", raising=False)
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    assert NETWORKS.build("entry_point_net_7", num_classes=2) == ("ep", 7)


def test_listing_command(capsys):
    from torchprune_flows.registry.__main__ import main

    assert main(["datasets"]) == 0
    assert "ToyGaussians" in capsys.readouterr().out
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("losses:\n") and "NLLNatsLoss" in out
    assert main(["nonsense"]) == 2
