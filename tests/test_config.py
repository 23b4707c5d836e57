"""Tests for experiment.config: includes, overrides, validation, keep ratios, customizations."""
import copy
import os

import numpy as np
import pytest
import yaml

from torchprune_flows.runner.config import (
    ConfigError,
    expand_customizations,
    keep_ratios,
    load_config,
    parse_override,
    resolve_config,
    retraining_config,
)

TOY_SPACING = [
    {"type": "geometric", "numIntervals": 20, "maxVal": 0.80, "minVal": 0.20},
    {"type": "linear", "numIntervals": 9, "maxVal": 0.18, "minVal": 0.02},
]


def base_config():
    """A complete toy config (as a dict) with no defaults written out."""
    return {
        "network": {"name": "ffjord_l2_h128_sigmoid_da", "dataset": "ToyGaussians", "outputSize": 2},
        "training": {
            "loss": "NLLPriorLoss",
            "metricsTest": [{"type": "NLLPrior", "kwargs": {}}, {"type": "Dummy"}],
            "batchSize": 1024,
            "optimizer": "AdamW",
            "optimizerKwargs": {"lr": 5.0e-3, "weight_decay": 1.0e-5},
            "numEpochs": 100,
        },
        "experiments": {"methods": ["FilterThresNet", "ThresNet"], "spacing": copy.deepcopy(TOY_SPACING)},
    }


def write(path, data):
    """Write ``data`` (a dict, dumped as YAML, or raw YAML text) to ``path``; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_dict(tmp_path, data, overrides=()):
    return load_config(write(tmp_path / "cfg.yaml", data), overrides)


# --- includes -----------------------------------------------------------------------------------


def test_top_level_include_replaces_sections_wholesale(in_tmp):
    base = base_config()
    base["training"]["numWorkers"] = 3
    base["training"]["lossKwargs"] = {"reduction": "sum"}
    write(in_tmp / "base.yaml", base)
    child_training = {k: v for k, v in base_config()["training"].items()}
    child_training["batchSize"] = 64
    write(in_tmp / "child.yaml", {"file": "base.yaml", "training": child_training, "seed": 7})

    cfg = load_config("child.yaml")

    assert cfg["training"]["batchSize"] == 64
    # keys only the included training section had are gone (no deep merge): defaults instead
    assert cfg["training"]["numWorkers"] == 0
    assert cfg["training"]["lossKwargs"] == {}
    # sections the child does not write come from the included file
    assert cfg["network"]["name"] == "ffjord_l2_h128_sigmoid_da"
    assert cfg["seed"] == 7
    assert "file" not in cfg


def test_section_include_with_sibling_overrides(in_tmp):
    training = base_config()["training"]
    write(in_tmp / "configs" / "training.yaml", training)
    cfg = base_config()
    cfg["training"] = {"file": "configs/training.yaml", "numEpochs": 5, "optimizerKwargs": {"lr": 0.1}}
    write(in_tmp / "main.yaml", cfg)

    out = load_config("main.yaml")

    assert out["training"]["numEpochs"] == 5
    assert out["training"]["earlyStopEpoch"] == 5  # default follows the merged numEpochs
    assert out["training"]["optimizerKwargs"] == {"lr": 0.1}  # shallow: replaced, not merged
    assert out["training"]["loss"] == "NLLPriorLoss"
    assert out["training"]["batchSize"] == 1024
    assert "file" not in out["training"]


def test_include_relative_to_cwd(in_tmp):
    base = base_config()
    base["seed"] = 11
    write(in_tmp / "configs" / "base.yaml", base)
    # the path is relative to the cwd, not to configs/exp/ where the including file lives
    write(in_tmp / "configs" / "exp" / "main.yaml", {"file": "configs/base.yaml"})

    assert load_config("configs/exp/main.yaml")["seed"] == 11


def test_include_relative_to_including_file(in_tmp):
    base = base_config()
    base["seed"] = 12
    write(in_tmp / "configs" / "base.yaml", base)
    write(in_tmp / "configs" / "main.yaml", {"file": "base.yaml"})  # no ./base.yaml in the cwd

    assert load_config("configs/main.yaml")["seed"] == 12


def test_include_prefers_cwd_over_including_directory(in_tmp):
    near, cwd = base_config(), base_config()
    near["seed"], cwd["seed"] = 1, 2
    write(in_tmp / "configs" / "base.yaml", near)
    write(in_tmp / "base.yaml", cwd)
    write(in_tmp / "configs" / "main.yaml", {"file": "base.yaml"})

    assert load_config("configs/main.yaml")["seed"] == 2


def test_nested_includes(in_tmp):
    base = base_config()
    training = base.pop("training")
    training_core = {k: v for k, v in training.items() if k != "numEpochs"}
    write(in_tmp / "t_core.yaml", {**training_core, "numEpochs": 3, "batchSize": 32})
    write(in_tmp / "t_mid.yaml", {"file": "t_core.yaml", "numEpochs": 4})
    write(in_tmp / "grand.yaml", {**base, "training": {"file": "t_mid.yaml", "batchSize": 16}, "seed": 3})
    write(in_tmp / "parent.yaml", {"file": "grand.yaml", "plugins": ["my_plugin"]})
    write(in_tmp / "child.yaml", {"file": "parent.yaml", "seed": 5})

    cfg = load_config("child.yaml")

    assert cfg["seed"] == 5
    assert cfg["plugins"] == ["my_plugin"]
    assert cfg["training"]["numEpochs"] == 4
    assert cfg["training"]["batchSize"] == 16
    assert cfg["training"]["loss"] == "NLLPriorLoss"


def test_top_level_include_cycle(in_tmp):
    write(in_tmp / "a.yaml", {"file": "b.yaml", "seed": 1})
    write(in_tmp / "b.yaml", {"file": "a.yaml", "seed": 2})
    with pytest.raises(ConfigError, match="include cycle") as err:
        load_config("a.yaml")
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value)


def test_section_include_cycle(in_tmp):
    write(in_tmp / "t.yaml", {"file": "t.yaml", "numEpochs": 3})
    cfg = base_config()
    cfg["training"] = {"file": "t.yaml"}
    write(in_tmp / "main.yaml", cfg)
    with pytest.raises(ConfigError, match="include cycle"):
        load_config("main.yaml")


def test_missing_include_message(in_tmp):
    main = write(in_tmp / "configs" / "main.yaml", {"file": "nowhere/base.yaml"})
    with pytest.raises(ConfigError) as err:
        load_config("configs/main.yaml")
    message = str(err.value)
    assert "nowhere/base.yaml" in message
    assert str(main) in message  # the including file
    assert str(in_tmp / "nowhere" / "base.yaml") in message  # looked relative to the cwd
    assert str(in_tmp / "configs" / "nowhere" / "base.yaml") in message  # ... and to main.yaml
    assert "\n" not in message


def test_missing_top_level_file(in_tmp):
    with pytest.raises(ConfigError, match="not found"):
        load_config("absent.yaml")


def test_top_level_must_be_mapping(in_tmp):
    write(in_tmp / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config("list.yaml")


def test_malformed_yaml_reports_file_and_line(in_tmp):
    write(in_tmp / "bad.yaml", "network:\n  name: x\n  dataset: [unclosed\nseed: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config("bad.yaml")
    message = str(err.value)
    assert "bad.yaml" in message
    assert "line 4" in message
    assert "\n" not in message


def test_malformed_included_yaml_names_included_file(in_tmp):
    write(in_tmp / "inc.yaml", "seed: 1\nseed 2: : :\n")
    write(in_tmp / "main.yaml", {"file": "inc.yaml"})
    with pytest.raises(ConfigError, match=r"inc\.yaml at line 2"):
        load_config("main.yaml")


def test_duplicate_key_is_rejected(in_tmp):
    write(in_tmp / "dup.yaml", "seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'seed'.*line 2|line 2.*duplicate key 'seed'"):
        load_config("dup.yaml")


# --- validation ---------------------------------------------------------------------------------


def test_unknown_key_suggests_close_match(in_tmp):
    cfg = base_config()
    cfg["training"]["numEpoch"] = 3
    with pytest.raises(ConfigError) as err:
        load_dict(in_tmp, cfg)
    assert str(err.value) == "unknown key 'training.numEpoch'; did you mean 'numEpochs'?"


def test_unknown_top_level_key(in_tmp):
    cfg = base_config()
    cfg["experiment"] = {}
    with pytest.raises(ConfigError, match="unknown key 'experiment'; did you mean 'experiments'"):
        load_dict(in_tmp, cfg)


def test_unknown_optimizer_and_scheduler(in_tmp):
    with pytest.raises(ConfigError, match="'Adamw'.*did you mean 'AdamW'"):
        load_dict(in_tmp, base_config(), ["training.optimizer=Adamw"])
    with pytest.raises(ConfigError, match="did you mean 'MultiStepLR'"):
        load_dict(in_tmp, base_config(), ["training.lrSchedulers=[{type: MultiStepLr}]"])


def test_missing_required_key(in_tmp):
    cfg = base_config()
    del cfg["training"]["loss"]
    with pytest.raises(ConfigError, match="missing required key 'training.loss'"):
        load_dict(in_tmp, cfg)


def test_spacing_required_unless_train_mode(in_tmp):
    cfg = base_config()
    del cfg["experiments"]["spacing"]
    with pytest.raises(ConfigError, match="missing required key 'experiments.spacing'"):
        load_dict(in_tmp, cfg)
    assert load_dict(in_tmp, cfg, ["experiments.mode=train"])["experiments"]["spacing"] == []


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("training.batchSize=0", "'training.batchSize' must be an integer >= 1; got 0"),
        ("training.batchSize='64'", "'training.batchSize' must be an integer >= 1; got '64'"),
        ("training.enableAMP=yes please", "'training.enableAMP' must be true or false"),
        ("training.metricsTest=[{type: NLLPrior}]", "'training.metricsTest' must be a list of exactly 2"),
        ("experiments.mode=prune", "'experiments.mode' must be one of cascade, retrain, train"),
        ("experiments.methods=[]", "'experiments.methods' must be a non-empty list"),
        ("network.outputSize=2.0", "'network.outputSize' must be an integer"),
        ("directories.results=3", "'directories.results' must be a string or null"),
        ("customizations=[{key: network.name, value: x}]",
         "'customizations[0].key' must be a non-empty list"),
    ],
)
def test_type_errors_name_key_and_value(in_tmp, override, fragment):
    with pytest.raises(ConfigError) as err:
        load_dict(in_tmp, base_config(), [override])
    assert fragment in str(err.value)


def test_defaults_are_filled(in_tmp):
    cfg = load_dict(in_tmp, base_config())
    training = cfg["training"]
    assert training["testBatchSize"] == 1024
    assert training["earlyStopEpoch"] == 100
    assert training["enableAMP"] is False
    assert training["transformsTrain"] == training["lrSchedulers"] == []
    assert training["metricsTest"][1] == {"type": "Dummy", "kwargs": {}}
    assert cfg["seed"] == 0
    assert cfg["plugins"] == []
    assert cfg["customizations"] == []
    assert cfg["retraining"] == {"startEpoch": 0}
    assert cfg["network"]["kwargs"] == {}
    assert cfg["experiments"]["mode"] == "cascade"
    assert cfg["experiments"]["numNets"] == 1 and cfg["experiments"]["retrainIterations"] == -1
    assert cfg["directories"] == {
        "results": None,
        "trained_networks": None,
        "training_data": "./data/training",
        "local_data": "./local",
    }


def test_explicit_values_beat_defaults(in_tmp):
    cfg = base_config()
    cfg["training"].update(testBatchSize=7, earlyStopEpoch=0)
    cfg["seed"] = 9
    out = load_dict(in_tmp, cfg)
    assert (out["training"]["testBatchSize"], out["training"]["earlyStopEpoch"], out["seed"]) == (7, 0, 9)


def test_scientific_notation_without_dot_is_a_float(in_tmp):
    text = yaml.safe_dump(base_config()).replace("lr: 0.005", "lr: 5e-3")
    assert "lr: 5e-3" in text
    out = load_dict(in_tmp, text)
    assert out["training"]["optimizerKwargs"]["lr"] == 0.005


# --- overrides ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a.b.c=1e-3", (["a", "b", "c"], 0.001)),
        ("training.numEpochs=5", (["training", "numEpochs"], 5)),
        ("experiments.methods=[ThresNet]", (["experiments", "methods"], ["ThresNet"])),
        ("training.optimizerKwargs={lr: 0.1, momentum: 0.9}",
         (["training", "optimizerKwargs"], {"lr": 0.1, "momentum": 0.9})),
        ("network.name=ffjord=x", (["network", "name"], "ffjord=x")),
        ("directories.results=null", (["directories", "results"], None)),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["training.numEpochs", "=5", "a..b=1", "a=[1,"])
def test_parse_override_errors(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_overrides_applied_after_includes(in_tmp):
    write(in_tmp / "base.yaml", base_config())
    write(in_tmp / "main.yaml", {"file": "base.yaml"})
    cfg = load_config(
        "main.yaml",
        [
            "training.optimizerKwargs.lr=1e-4",
            "experiments.methods=[ThresNet]",
            "network.kwargs.solver.method=rk4",  # new nested key, intermediates created
            "experiments.spacing.0.numIntervals=2",
        ],
    )
    assert cfg["training"]["optimizerKwargs"] == {"lr": 1e-4, "weight_decay": 1e-5}
    assert cfg["experiments"]["methods"] == ["ThresNet"]
    assert cfg["network"]["kwargs"] == {"solver": {"method": "rk4"}}
    assert len(keep_ratios(cfg["experiments"])) == 2 + 9


def test_override_derived_default_follows(in_tmp):
    cfg = load_dict(in_tmp, base_config(), ["training.batchSize=64", "training.numEpochs=10"])
    assert cfg["training"]["testBatchSize"] == 64
    assert cfg["training"]["earlyStopEpoch"] == 10


def test_override_into_scalar_is_an_error(in_tmp):
    with pytest.raises(ConfigError, match="'training.batchSize' is an integer, not a mapping"):
        load_dict(in_tmp, base_config(), ["training.batchSize.x=1"])
    with pytest.raises(ConfigError, match="'experiments.spacing.5' is not a valid index"):
        load_dict(in_tmp, base_config(), ["experiments.spacing.5.maxVal=0.5"])


# --- keep ratios --------------------------------------------------------------------------------


def test_keep_ratios_toy_spacing():
    ratios = keep_ratios({"spacing": TOY_SPACING})
    expected = np.concatenate([np.geomspace(0.80, 0.20, 20), np.linspace(0.18, 0.02, 9)])
    assert len(ratios) == 29
    assert ratios[0] == 0.8 and ratios[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(ratios, expected, rtol=0, atol=0)
    assert all(type(r) is float for r in ratios)


def test_keep_ratios_manual_and_order():
    spacing = [
        {"type": "manual", "values": [1, 0.5]},
        {"type": "linear", "numIntervals": 2, "maxVal": 0.4, "minVal": 0.2},
    ]
    assert keep_ratios({"spacing": spacing}) == [1.0, 0.5, 0.4, 0.2]


@pytest.mark.parametrize(
    "entry, shown",
    [
        ({"type": "geometric", "numIntervals": 3, "maxVal": 0.8, "minVal": 0}, "keep ratio 0 "),
        ({"type": "linear", "numIntervals": 3, "maxVal": 0.8, "minVal": 0}, "keep ratio 0 "),
        ({"type": "manual", "values": [0.5, 0]}, "keep ratio 0 "),
        ({"type": "linear", "numIntervals": 3, "maxVal": 1.5, "minVal": 0.5}, "keep ratio 1.5 "),
        ({"type": "manual", "values": [1.5]}, "keep ratio 1.5 "),
    ],
)
def test_keep_ratio_outside_unit_interval(in_tmp, entry, shown):
    spacing = [TOY_SPACING[0], entry]
    with pytest.raises(ConfigError) as err:
        keep_ratios({"spacing": spacing})
    assert shown + "from experiments.spacing[1] is outside (0, 1]" in str(err.value)
    cfg = base_config()
    cfg["experiments"]["spacing"] = spacing
    with pytest.raises(ConfigError, match=r"is outside \(0, 1\]"):
        load_dict(in_tmp, cfg)


def test_spacing_entry_structure_errors():
    with pytest.raises(ConfigError, match="'experiments.spacing\\[0\\].type' must be one of"):
        keep_ratios({"spacing": [{"type": "log", "numIntervals": 2, "maxVal": 0.5, "minVal": 0.1}]})
    with pytest.raises(ConfigError, match="missing required key 'experiments.spacing\\[0\\].minVal'"):
        keep_ratios({"spacing": [{"type": "linear", "numIntervals": 2, "maxVal": 0.5}]})


# --- retraining ---------------------------------------------------------------------------------


def test_retraining_config_shallow_merge_and_start_epoch(in_tmp):
    cfg = base_config()
    cfg["retraining"] = {"numEpochs": 50, "startEpoch": 10, "optimizerKwargs": {"lr": 1e-4}}
    loaded = load_dict(in_tmp, cfg)

    retrain = retraining_config(loaded)

    assert retrain["numEpochs"] == 50
    assert retrain["startEpoch"] == 10
    assert retrain["optimizerKwargs"] == {"lr": 1e-4}  # replaced wholesale
    assert retrain["batchSize"] == 1024 and retrain["loss"] == "NLLPriorLoss"
    assert retrain["earlyStopEpoch"] == 50  # defaulted in training, so follows retraining's numEpochs
    assert "startEpoch" not in loaded["training"]
    assert loaded["training"]["numEpochs"] == 100


def test_retraining_config_default_start_epoch():
    cfg = {"training": {"numEpochs": 3, "batchSize": 2}}
    assert retraining_config(cfg) == {"numEpochs": 3, "batchSize": 2, "startEpoch": 0}


def test_retraining_start_epoch_must_be_below_num_epochs(in_tmp):
    cfg = base_config()
    cfg["retraining"] = {"numEpochs": 20, "startEpoch": 20}
    with pytest.raises(ConfigError, match="startEpoch"):
        load_dict(in_tmp, cfg)


def test_retraining_keys_are_validated(in_tmp):
    cfg = base_config()
    cfg["retraining"] = {"numEpoch": 20}
    with pytest.raises(ConfigError, match="unknown key 'retraining.numEpoch'; did you mean 'numEpochs'"):
        load_dict(in_tmp, cfg)


# --- customizations -----------------------------------------------------------------------------


def test_expand_customizations_labels_and_values(in_tmp):
    cfg = base_config()
    cfg["customizations"] = [
        {"key": ["network", "name"], "value": "ffjord_l4_h64_sigmoid_da"},
        {"key": ["network", "name"], "value": "odd/name with space"},
        {"key": ["training", "optimizerKwargs", "lr"], "value": 0.01},
        {"key": ["training", "batchSize"], "value": 64},
    ]
    loaded = load_dict(in_tmp, cfg)

    expanded = expand_customizations(loaded)

    labels = [label for label, _ in expanded]
    assert labels == [
        "network.name=ffjord_l4_h64_sigmoid_da",
        "network.name=odd_name_with_space",
        "training.optimizerKwargs.lr=0.01",
        "training.batchSize=64",
    ]
    variants = [variant for _, variant in expanded]
    assert variants[0]["network"]["name"] == "ffjord_l4_h64_sigmoid_da"
    assert variants[1]["network"]["name"] == "odd/name with space"
    assert variants[2]["training"]["optimizerKwargs"] == {"lr": 0.01, "weight_decay": 1e-5}
    assert variants[3]["training"]["batchSize"] == 64
    assert variants[3]["training"]["testBatchSize"] == 64  # defaulted value follows
    assert all(v["customizations"] == [] for v in variants)
    # deep copies: the loaded config is untouched
    assert loaded["network"]["name"] == "ffjord_l2_h128_sigmoid_da"
    assert loaded["training"]["optimizerKwargs"]["lr"] == 5.0e-3


def test_expand_without_customizations(in_tmp):
    loaded = load_dict(in_tmp, base_config())
    assert expand_customizations(loaded) == [("", loaded)]


def test_resolved_runs_carry_their_keep_ratios_and_the_config_as_written(in_tmp):
    cfg = base_config()
    cfg["customizations"] = [{"key": ["experiments", "spacing"], "value": [{"type": "manual", "values": [0.5, 0.25]}]},
                             {"key": ["seed"], "value": 3}]
    path = write(in_tmp / "cfg.yaml", cfg)
    resolved = resolve_config(path)
    assert resolved.cfg == load_config(path)  # what config.yaml holds: no keep ratios added
    assert "keep_ratios" not in yaml.safe_dump(resolved.cfg)
    spaced, seeded = resolved.runs
    assert seeded.label == "seed=3" and spaced.label.startswith("experiments.spacing=")
    assert spaced.keep_ratios == (0.5, 0.25)
    assert seeded.keep_ratios == tuple(keep_ratios(seeded.cfg["experiments"])) and len(seeded.keep_ratios) == 29
    assert [(r.label, r.cfg) for r in resolved.runs] == expand_customizations(resolved.cfg)
    plain = resolve_config(write(in_tmp / "plain.yaml", base_config()))
    assert [(r.label, r.keep_ratios) for r in plain.runs] == [("", tuple(keep_ratios(plain.cfg["experiments"])))]


def test_duplicate_labels_are_made_unique(in_tmp):
    cfg = base_config()
    cfg["customizations"] = [{"key": ["seed"], "value": 1}, {"key": ["seed"], "value": 1}]
    labels = [label for label, _ in expand_customizations(load_dict(in_tmp, cfg))]
    assert len(set(labels)) == 2 and all(os.sep not in label for label in labels)


def test_invalid_customization_is_rejected_at_load(in_tmp):
    cfg = base_config()
    cfg["customizations"] = [{"key": ["training", "optimizer"], "value": "NoSuchOpt"}]
    with pytest.raises(ConfigError, match=r"customizations\[0\].*unknown optimizer"):
        load_dict(in_tmp, cfg)
