"""torchprune's experiment config: its schema, what its entries mean, and its runs.

Checks each section against the schema (defaults filled, derived defaults such as
``testBatchSize`` following their source key), computes the keep ratios of
``experiments.spacing`` and expands ``customizations`` into one :class:`RunConfig` each; names of
networks, datasets, losses, metrics and transforms are only checked for their type here
(resolving them is the registry's job). Optimizer and learning-rate scheduler names are checked
against ``torch.optim``.
"""
import copy
import dataclasses
import hashlib
import json
import re
import warnings
from typing import Any, List, Tuple

import numpy as np
import torch

from torchprune_flows.errors import check_keep_ratio

from .checks import (_ABSENT, Check, ConfigError, _anything, _boolean, _check_mapping, _Field, _integer, _list_of,
                     _mapping, _named_class, _number, _one_of, _optional_string, _reject_unknown, _string,
                     _type_error)
from .loading import _set_path, read_config


_optimizer = _named_class(torch.optim, torch.optim.Optimizer, "optimizer (torch.optim)")
_scheduler = _named_class(
    torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler,
    "learning-rate scheduler (torch.optim.lr_scheduler)",
)


def _entry(type_check: Check = _string, **extra: _Field) -> Check:
    """A ``{type, kwargs, ...}`` entry (transforms, metrics, schedulers); kwargs default {}."""
    schema = {"type": _Field(type_check), "kwargs": _Field(_mapping, {}), **extra}
    return lambda value, where: _check_mapping(value, schema, where)


def _dataset_kwargs(value: Any, where: str) -> dict:
    """Free-form dataset arguments; the sizes our datasets take must be sizes (0 is none)."""
    value = _mapping(value, where)
    for key in ("num_train", "num_test"):
        if key in value and value[key] is not None:
            _integer(1)(value[key], f"{where}.{key}")
    return value


_TRAINING = {
    "transformsTrain": _Field(_list_of(_entry()), []),
    "transformsTest": _Field(_list_of(_entry()), []),
    "transformsFinal": _Field(_list_of(_entry()), []),
    "loss": _Field(_string),
    "lossKwargs": _Field(_mapping, {}),
    "metricsTest": _Field(_list_of(_entry(), length=2)),
    "batchSize": _Field(_integer(1)),
    "testBatchSize": _Field(_integer(1), same_as="batchSize"),
    "optimizer": _Field(_optimizer),
    "optimizerKwargs": _Field(_mapping, {}),
    "numEpochs": _Field(_integer(1)),
    "earlyStopEpoch": _Field(_integer(0), same_as="numEpochs"),
    "enableAMP": _Field(_boolean, False),
    "lrSchedulers": _Field(_list_of(_entry(_scheduler, stepKwargs=_Field(_mapping, {}))), []),
    "datasetKwargs": _Field(lambda value, where: _dataset_kwargs(value, where), {}),
    "numWorkers": _Field(_integer(0), 0),
}

# derived default -> the key it defaults to
_DERIVED = {f.same_as: key for key, f in _TRAINING.items() if f.same_as}

_RETRAINING = {
    **{key: _Field(field.check, _ABSENT) for key, field in _TRAINING.items()},
    "startEpoch": _Field(_integer(0), 0),
}

_NETWORK = {
    "name": _Field(_string),
    "dataset": _Field(_string),
    "outputSize": _Field(_integer(1)),
    "kwargs": _Field(_mapping, {}),
}

_SPACING_ENTRY = {
    "geometric": {"numIntervals": _Field(_integer(1)), "maxVal": _Field(_number), "minVal": _Field(_number)},
    "manual": {"values": _Field(_list_of(_number, non_empty=True))},
}
_SPACING_ENTRY["linear"] = _SPACING_ENTRY["geometric"]


def _spacing_entry(value: Any, where: str) -> dict:
    """Validate one ``experiments.spacing`` entry (structure only, not the ratio range)."""
    if not isinstance(value, dict):
        raise _type_error(where, "a mapping with a 'type' key", value)
    kind = _one_of(*_SPACING_ENTRY)(value.get("type"), f"{where}.type")
    rest = {key: val for key, val in value.items() if key != "type"}
    return {"type": kind, **_check_mapping(rest, _SPACING_ENTRY[kind], where)}


_EXPERIMENTS = {
    "methods": _Field(_list_of(_string, non_empty=True)),
    "mode": _Field(_one_of("cascade", "retrain", "train", "cascade-rewind"), "cascade"),
    "numNets": _Field(_integer(1), 1),
    "numRepetitions": _Field(_integer(1), 1),
    "spacing": _Field(_list_of(_spacing_entry), _ABSENT),
    "retrainIterations": _Field(_integer(-1), -1),
    "plotting": _Field(_mapping, {}),
    "datasetTest": _Field(_optional_string, _ABSENT),
    # absent = off, so the resolved config (and the resume check) of a run without it is unchanged
    "control": _Field(_one_of("none", "dense"), _ABSENT),
    # our extension: what a keep ratio counts (torchprune_flows.pruning.KEEP_RATIO_COUNTS); left
    # out when not given (= all_parameters), so run folders of earlier versions still resume
    "keepRatioOver": _Field(_one_of("all_parameters", "all_parameters_with_removed_unit_biases", "prunable_weights"),
                            _ABSENT),
}

_DIRECTORIES = {
    "results": _Field(_optional_string, None),
    "trained_networks": _Field(_optional_string, None),
    "training_data": _Field(_optional_string, "./data/training"),
    "local_data": _Field(_optional_string, "./local"),
}

_CUSTOMIZATION = {
    "key": _Field(_list_of(_string, non_empty=True)),
    "value": _Field(_anything),
}

# torchprune's own top-level keys: accepted (configs run under both runners) and kept when
# given; our runner has no coreset-based method and draws its own plots.
_TORCHPRUNE_ONLY = ["coresets", "blacklist", "network_names", "network_colors"]

_TOP_LEVEL = [
    "network", "training", "retraining", "experiments", "directories",
    "customizations", "seed", "plugins", "file", *_TORCHPRUNE_ONLY,
]


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _spacing_values(entry: dict) -> List[float]:
    """The keep ratios of one validated spacing entry, in order."""
    if entry["type"] == "manual":
        return [float(v) for v in entry["values"]]
    space = np.geomspace if entry["type"] == "geometric" else np.linspace
    return [float(v) for v in space(entry["maxVal"], entry["minVal"], entry["numIntervals"])]


def _check_ratio(ratio: float, where: str) -> None:
    check_keep_ratio(ratio, where=where, error=ConfigError)


def keep_ratios(experiments: dict) -> List[float]:
    """The keep ratios of ``experiments["spacing"]``, entries concatenated in order.

    ``geometric`` = ``numpy.geomspace(maxVal, minVal, numIntervals)``, ``linear`` =
    ``numpy.linspace(maxVal, minVal, numIntervals)``, ``manual`` = ``values``. Every ratio must
    lie in (0, 1]; a missing ``spacing`` gives ``[]``. A run gets them once, from
    :func:`resolve_config` (:attr:`RunConfig.keep_ratios`).
    """
    spacing = experiments.get("spacing") or []
    return _spacing_ratios([_spacing_entry(raw, f"experiments.spacing[{i}]") for i, raw in enumerate(spacing)])


def _spacing_ratios(entries: List[dict]) -> List[float]:
    """The keep ratios of checked spacing entries, each in (0, 1]."""
    ratios = []
    for i, entry in enumerate(entries):
        where = f"experiments.spacing[{i}]"
        if entry["type"] != "manual":  # geomspace cannot even be computed through 0
            _check_ratio(entry["maxVal"], where)
            _check_ratio(entry["minVal"], where)
        for ratio in _spacing_values(entry):
            _check_ratio(ratio, where)
            ratios.append(ratio)
    return ratios


def _check_experiments(value: Any) -> Tuple[dict, List[float]]:
    """The checked ``experiments`` section and its keep ratios."""
    out = _check_mapping(value, _EXPERIMENTS, "experiments")
    if "spacing" not in out:
        if out["mode"] != "train":
            raise ConfigError(
                "missing required key 'experiments.spacing'; add it (only mode 'train' may omit it)"
            )
        out["spacing"] = []
    if out.get("control") == "dense" and out["mode"] != "cascade":
        raise ConfigError(
            f"'experiments.control: dense' retrains the base net through the cascade's cycles and needs "
            f"experiments.mode 'cascade' (got '{out['mode']}'); set mode: cascade or drop control"
        )
    return out, _spacing_ratios(out["spacing"])


def _check_retraining(value: Any, raw_training: dict, training: dict) -> dict:
    """Validate ``retraining`` (training overrides plus ``startEpoch``).

    A derived default (``testBatchSize``, ``earlyStopEpoch``) that ``training`` left unset follows
    the retraining value of its source key when ``retraining`` overrides that key.
    """
    if value is None:
        value = {}
    out = _check_mapping(value, _RETRAINING, "retraining")
    for source, derived in _DERIVED.items():
        if source in out and derived not in out and derived not in raw_training:
            out[derived] = out[source]
    merged = _merge_retraining(training, out)
    merged.pop("startEpoch")
    merged = _check_mapping(merged, _TRAINING, "retraining")
    if out["startEpoch"] >= merged["numEpochs"]:
        raise ConfigError(
            f"'retraining.startEpoch' is {out['startEpoch']} but retraining runs only "
            f"{merged['numEpochs']} epochs; make startEpoch smaller than numEpochs"
        )
    return out


def _check_customizations(value: Any) -> list:
    entry = lambda v, where: _check_mapping(v, _CUSTOMIZATION, where)  # noqa: E731
    return _list_of(entry)(value if value is not None else [], "customizations")


def _class_kwargs(cls: type, kwargs: dict, where: str, skip: Tuple[str, ...]) -> None:
    """``kwargs`` must be keyword arguments of ``cls`` with values of their defaults' types:
    unknown keys name close matches, a number where a number is expected, and so on."""
    import inspect

    from .checks import _did_you_mean

    params = {name: p for name, p in inspect.signature(cls).parameters.items() if name not in skip}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for key, value in kwargs.items():
        if key not in params:
            hint = _did_you_mean(key, list(params))
            hint = f"; {hint}" if hint else ""
            raise ConfigError(f"unknown key '{where}.{key}' for {cls.__name__}{hint} "
                              f"(it takes {', '.join(params) or 'none'})")
        default = params[key].default
        if default is inspect.Parameter.empty or default is None or value is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, (tuple, list)):
            ok = isinstance(value, (list, tuple)) and len(value) == len(default)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise _type_error(f"{where}.{key}", f"a value like {cls.__name__}'s default {default!r}", value)


def _check_optimizer_and_schedulers(training: dict, where: str) -> None:
    """Keyword arguments against the signatures of the chosen torch classes, then the optimizer
    and schedulers themselves, built on a dummy parameter (100 iterations an epoch) and stepped
    once: their own errors (a negative learning rate, betas outside [0, 1), a step size of 0)
    become one line before anything is written."""
    _class_kwargs(getattr(torch.optim, training["optimizer"]), training["optimizerKwargs"],
                  f"{where}.optimizerKwargs", ("params",))
    for i, entry in enumerate(training["lrSchedulers"]):
        _class_kwargs(getattr(torch.optim.lr_scheduler, entry["type"]), {**entry["kwargs"], **entry["stepKwargs"]},
                      f"{where}.lrSchedulers[{i}].kwargs", ("optimizer",))
    from ..training import make_schedulers  # the runner's own construction (stepKwargs in epochs)

    param = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = getattr(torch.optim, training["optimizer"])([param], **training["optimizerKwargs"])
    except Exception as err:  # noqa: BLE001  (torch checks its arguments in many ways)
        raise ConfigError(f"'{where}.optimizerKwargs' {training['optimizerKwargs']} are rejected by "
                          f"{training['optimizer']}: {_reason(err)}") from err
    for i, entry in enumerate(training["lrSchedulers"]):
        try:
            with warnings.catch_warnings():  # a scheduler stepped with no optimizer step: the point here
                warnings.simplefilter("ignore")
                for scheduler in make_schedulers(optimizer, [entry], 100):
                    scheduler.step()
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"'{where}.lrSchedulers[{i}]' ({entry['type']} with kwargs {entry['kwargs']}, "
                              f"stepKwargs {entry['stepKwargs']}) is rejected by torch: {_reason(err)}") from err


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__


def _validate(cfg: dict) -> Tuple[dict, List[float]]:
    """Validate a whole include-free config: it with all defaults filled, and its keep ratios."""
    _reject_unknown(cfg, _TOP_LEVEL, "")
    if "file" in cfg:
        raise ConfigError(
            "top-level 'file' is left after include resolution (set by an override or "
            "customization?); includes belong in the YAML file"
        )
    for key in ("network", "training", "experiments"):
        if key not in cfg:
            raise ConfigError(f"missing required key '{key}'; add the '{key}:' section")
    raw_training = cfg["training"] if isinstance(cfg["training"], dict) else {}
    training = _check_mapping(cfg["training"], _TRAINING, "training")
    passthrough = {key: copy.deepcopy(cfg[key]) for key in _TORCHPRUNE_ONLY if key in cfg}
    network = _check_mapping(cfg["network"], _NETWORK, "network")
    retraining = _check_retraining(cfg.get("retraining"), raw_training, training)
    _check_optimizer_and_schedulers(training, "training")
    _check_optimizer_and_schedulers(_merge_retraining(training, retraining), "retraining")
    experiments, ratios = _check_experiments(cfg["experiments"])
    return {
        **passthrough,
        "network": network,
        "training": training,
        "retraining": retraining,
        "experiments": experiments,
        "directories": _check_mapping(cfg.get("directories") or {}, _DIRECTORIES, "directories"),
        "customizations": _check_customizations(cfg.get("customizations")),
        "seed": _integer(0)(cfg.get("seed", 0), "seed"),
        "plugins": _list_of(_string)(cfg.get("plugins", []), "plugins"),
    }, ratios


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run of a config: its folder's ``label`` (``""``, or a customization's), its resolved
    ``cfg`` (what the folder's ``config.yaml`` holds) and its ``keep_ratios``, resolved once."""

    label: str
    cfg: dict
    keep_ratios: Tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ResolvedConfig:
    """A checked config (``cfg``: what ``<out>/config.yaml`` holds) and its ``runs``, one per
    customization (or one, labelled ``""``, without customizations)."""

    cfg: dict
    runs: Tuple[RunConfig, ...]


def resolve_config(path, overrides=()) -> ResolvedConfig:
    """Read, include-resolve, override, validate and default-fill the config at ``path``, and
    expand it into its runs (each customization validated, keep ratios computed once).

    ``overrides`` are ``"dotted.key=value"`` strings (value parsed as YAML) applied after the
    includes and before validation.
    """
    cfg, ratios = _validate(read_config(path, overrides))
    return ResolvedConfig(cfg, tuple(_runs(cfg, ratios)))


def load_config(path, overrides=()) -> dict:
    """The checked config of :func:`resolve_config` (its customizations checked, not expanded)."""
    return resolve_config(path, overrides).cfg


def retraining_config(cfg: dict) -> dict:
    """The effective retraining settings: ``training`` shallow-updated with ``retraining``.

    ``startEpoch`` (default 0) is taken out of the update and added as its own key.
    """
    return copy.deepcopy(_merge_retraining(cfg["training"], cfg.get("retraining") or {}))


def _merge_retraining(training: dict, retraining: dict) -> dict:
    update = dict(retraining)
    start = update.pop("startEpoch", 0)
    return {**training, **update, "startEpoch": start}


def expand_customizations(cfg: dict) -> List[Tuple[str, dict]]:
    """One ``(label, config)`` per ``customizations`` entry; ``[("", cfg)]`` when there are none.

    Each config is a deep copy of ``cfg`` with ``cfg[k1][k2]... = value`` set (missing
    intermediate mappings are created), ``customizations`` emptied, and re-validated. A derived
    default (``testBatchSize``, ``earlyStopEpoch``) that still equals its source key follows a
    customized ``batchSize`` / ``numEpochs``. Labels look like ``network.name=ffjord_l4_h64``
    and are safe as file names; repeated labels get a ``_<index>`` suffix.
    """
    return [(run.label, run.cfg) for run in _runs(cfg)]


def _runs(cfg: dict, ratios: List[float] = None) -> List[RunConfig]:
    """The runs of a checked config (whose keep ratios are ``ratios`` when known)."""
    entries = _check_customizations(cfg.get("customizations"))
    if not entries:
        return [RunConfig("", cfg, tuple(keep_ratios(cfg["experiments"]) if ratios is None else ratios))]
    expanded, seen = [], set()
    for i, entry in enumerate(entries):
        variant = copy.deepcopy(cfg)
        variant["customizations"] = []
        _follow_derived(variant, entry["key"], entry["value"])
        _set_path(variant, entry["key"], copy.deepcopy(entry["value"]), f"customizations[{i}]")
        try:
            variant, variant_ratios = _validate(variant)
        except ConfigError as err:
            raise ConfigError(f"customizations[{i}] makes the config invalid: {err}") from None
        label = _label(entry["key"], entry["value"])
        if label in seen:
            label = f"{label}_{i}"
        seen.add(label)
        expanded.append(RunConfig(label, variant, tuple(variant_ratios)))
    return expanded


def _follow_derived(cfg: dict, path: List[str], value: Any) -> None:
    """Keep a defaulted ``testBatchSize`` / ``earlyStopEpoch`` in step with its source key."""
    if len(path) != 2 or path[0] not in ("training", "retraining") or path[1] not in _DERIVED:
        return
    if not isinstance(cfg.get("training"), dict) or not isinstance(cfg.get("retraining", {}), dict):
        return
    source, derived = path[1], _DERIVED[path[1]]
    before = cfg["training"] if path[0] == "training" else retraining_config(cfg)
    if derived in before and before.get(derived) == before.get(source):
        cfg.setdefault(path[0], {})[derived] = copy.deepcopy(value)


def _label(path: List[str], value: Any, limit: int = 120) -> str:
    """File-name-safe label ``k1.k2=value`` for one customization."""
    if isinstance(value, (dict, list)):
        shown = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    else:
        shown = str(value)
    label = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", f"{'.'.join(path)}={shown}")
    if len(label) > limit:
        digest = hashlib.sha1(label.encode("utf-8")).hexdigest()[:8]
        label = f"{label[: limit - 9]}_{digest}"
    return label
