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
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "  FilterThresNet (FT)\n" in out and "  ThresNet (WT)\n" in out
    assert main(["nonsense"]) == 2


# --------------------------------------------------------------------------------------------
# Overwrites, wildcards, examples, field choices, colliding keywords
# --------------------------------------------------------------------------------------------
def _factory(**kw):
    return kw


def test_registering_again_warns_only_for_a_different_object():
    import warnings

    reg = Registry("network")
    first, second = (lambda **kw: 1), (lambda **kw: 2)
    reg.register("plain", first)
    reg.register("fam_{x:d}", first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.register("plain", first)  # the same object again: silent
        reg.register("fam_{x:d}")(first)
    with pytest.warns(UserWarning, match="network 'plain' is registered again with a different object") as record:
        reg.register("plain", second)
    assert record[0].filename == __file__  # points at the registering line
    with pytest.warns(UserWarning, match=r"network family 'fam_\{x:d\}' is registered again"):
        reg.register("fam_{x:d}")(second)
    assert reg.build("plain") == 2 and reg.build("fam_3") == 2
    assert reg.names() == ["plain", "fam_{x:d}"]  # replaced, not listed twice


def test_names_filter_with_shell_wildcards():
    reg = Registry("network")
    for name in ["alpha", "beta", "alpine", "net_l{layers:d}_{act}", "cnf_l{layers:d}"]:
        reg.register(name, _factory)
    assert reg.names("al*") == ["alpha", "alpine"]
    assert reg.names("?eta") == ["beta"]
    assert reg.names("*_l{*") == ["net_l{layers:d}_{act}", "cnf_l{layers:d}"]
    assert reg.names(["beta", "cnf_*"]) == ["beta", "cnf_l{layers:d}"]
    assert reg.names("Alpha") == []  # case-sensitive, like the names themselves
    assert reg.names() == reg.names("*") == ["alpha", "alpine", "beta", "net_l{layers:d}_{act}", "cnf_l{layers:d}"]


def test_families_list_their_examples():
    from torchprune_flows.registry import Choices, Example

    reg = Registry("network")
    reg.register("plain", _factory)
    reg.register("sized", _factory, examples=[("sized", {"size": 4})])
    reg.register("net_l{layers:d}_{act}", examples=["net_l2_tanh", ("net_l1_relu", {"dim": 3})],
                 choices={"act": Choices(["tanh", "relu"])})(_factory)
    reg.register("bare_{x:d}", _factory)
    families = reg.families()
    assert list(families) == ["sized", "net_l{layers:d}_{act}", "bare_{x:d}"]  # "plain" is no family
    assert families["net_l{layers:d}_{act}"] == (Example("net_l2_tanh", {}), Example("net_l1_relu", {"dim": 3}))
    assert families["bare_{x:d}"] == ()
    example = families["net_l{layers:d}_{act}"][1]
    assert reg.build(example.name, **example.kwargs) == {"layers": 1, "act": "relu", "dim": 3}
    assert str(example) == "net_l1_relu(dim=3)" and str(families["sized"][0]) == "sized(size=4)"
    assert list(reg.families("net_l2_*")) == ["net_l{layers:d}_{act}"]  # matched through an example
    assert list(reg.families("si*")) == ["sized"]
    with pytest.raises(ValueError, match="example 'net_l2_tanh' is not a member of the network family 'net2_"):
        reg.register("net2_l{layers:d}_{act}", examples=["net_l2_tanh"])(_factory)
    with pytest.raises(ValueError, match="example 'net2_l2_gelu' is not a member.*act 'gelu' is not valid"):
        reg.register("net2_l{layers:d}_{act}", examples=["net2_l2_gelu"],
                     choices={"act": Choices(["tanh"])})(_factory)
    with pytest.raises(ValueError, match="example 'other' of the network 'exact' must be that name"):
        reg.register("exact", _factory, examples=["other"])
    assert "net2_l{layers:d}_{act}" not in reg.names() and "exact" not in reg.names()  # nothing half-registered


def test_field_choices_reject_names_and_suggest_full_valid_ones():
    from torchprune_flows.registry import Choices, InvalidFieldError

    reg = Registry("network")
    reg.register("net_l{layers:d}_{act}[_{suffix:*}]", _factory,
                 choices={"act": Choices(["tanh", "sigmoid"]), "suffix": Choices(["da", "high_tol"], joined="_")})
    assert reg.build("net_l2_tanh_da_high_tol") == {"layers": 2, "act": "tanh", "suffix": "da_high_tol"}
    assert "net_l2_sigmoid_high_tol" in reg and "net_l2_sigmoid_high_tox" not in reg
    with pytest.raises(InvalidFieldError) as err:
        reg.get("net_l4_sigmoid_high_tox")
    message = str(err.value)
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError) and "\n" not in message
    assert "suffix 'high_tox' is not valid" in message
    assert message.split("close to it: ")[1].startswith("net_l4_sigmoid_high_tol")
    with pytest.raises(InvalidFieldError, match="close to it: net_l4_sigmoid_da"):
        reg.get("net_l4_sigmod_da")
    with pytest.raises(UnknownNameError, match="did you mean net_l4_tanh_da?"):
        reg.get("nte_l4_tanh_da")  # a typo outside the fields: one transposition away


def test_builtin_misspelt_suffix_suggests_the_full_name():
    with pytest.raises(UnknownNameError) as err:
        NETWORKS.get("ffjord_l4_h64_sigmoid_high_tox")
    assert "unknown network suffix '_high_tox'" in str(err.value)
    assert str(err.value).split("close to it: ")[1].startswith("ffjord_l4_h64_sigmoid_high_tol")
    with pytest.raises(UnknownNameError, match="close to it: ffjord_l3_hm20_f2_softplus"):
        NETWORKS.get("ffjord_l3_hm20_f2_sofplus")


def test_a_keyword_colliding_with_a_field_is_one_clean_type_error():
    reg = Registry("network")
    reg.register("net_l{layers:d}_h{hidden:d}[_{suffix:*}]", _factory)
    with pytest.raises(TypeError) as err:
        reg.build("net_l2_h8", hidden=16)
    message = str(err.value)
    assert message == ("network 'net_l2_h8': keyword argument hidden collides with the name's field hidden=8 of "
                       "the family 'net_l{layers:d}_h{hidden:d}[_{suffix:*}]'; set it in the name")
    with pytest.raises(TypeError, match=r"keyword arguments layers, suffix collide .*suffix \(left out of"):
        reg.build("net_l2_h8", layers=3, suffix="da")
    assert reg.build("net_l2_h8", width=1) == {"layers": 2, "hidden": 8, "suffix": None, "width": 1}


#: the built-in families: the package's own (test modules collected before this one may have loaded
#: plugin families, e.g. test_network_contract's tests/plugins/my_flows.py)
BUILTIN_FAMILIES = {name: examples for name, examples in NETWORKS.families().items()
                    if getattr(NETWORKS._entry(name), "__module__", "").startswith("torchprune_flows.")}


def test_every_builtin_network_family_has_examples_that_resolve():
    families = BUILTIN_FAMILIES
    assert {"ffjord_multiscale_mnist", "ffjord_multiscale_cifar"} <= set(families)
    assert {t.split("_")[0] for t in families if "{" in t} == {"ffjord", "cnf", "node"}
    for entry, examples in families.items():
        assert examples, f"{entry} has no examples"
        for example in examples:  # each resolves to the entry it is listed under
            assert getattr(NETWORKS.get(example.name), "family_template", example.name) == entry


def test_listing_shows_families_with_examples_and_filters(capsys):
    from torchprune_flows.registry.__main__ import main

    assert main(["networks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    template = "ffjord_l{num_linear_layers:d}_h{hidden_width:d}_{activation}[_{suffix:*}]"
    at = lines.index(f"  {template}")
    example = NETWORKS.examples(template)[0]
    assert lines[at + 1] == f"      e.g. {example}"
    assert any(line.startswith("      e.g. ffjord_multiscale_mnist(image_size=") for line in lines)
    assert main(["datasets", "networks", "--pattern", "Toy*"]) == 0
    out = capsys.readouterr().out
    assert "ToyMoons" in out and "Power" not in out and "ffjord" not in out
