"""torchprune's YAML experiment config format: loading, includes, overrides and validation.

A config is read with :func:`load_config`, which

1. reads the YAML file and resolves ``file:`` includes (top level and section level),
2. applies command-line style overrides (``"training.numEpochs=5"``),
3. validates every section against the schema below and fills the defaults,

and returns a plain, fully resolved ``dict``. Names of networks, datasets, losses, metrics and
transforms are only checked for their type here; resolving them is another module's job.
Optimizer and learning-rate scheduler names are checked against ``torch.optim``.

Include semantics (as in torchprune):

* a top-level ``file: other.yaml`` pulls in a whole config; the including file's top-level keys
  replace the included ones wholesale (shallow merge);
* a section ``training: {file: t.yaml, numEpochs: 5}`` pulls in the section's *content* (the
  included file has no ``training:`` wrapper); keys written beside ``file:`` override it;
* includes nest; an include path is looked up relative to the working directory first (the
  paper's configs rely on that), then relative to the directory of the including file.

YAML is read with a ``SafeLoader`` that additionally reads ``1e-3`` as a float (YAML 1.2
style; plain PyYAML would return the string ``"1e-3"``) and rejects duplicate keys.
"""
import copy
import dataclasses
import difflib
import hashlib
import inspect
import json
import os
import re
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
import yaml

__all__ = [
    "ConfigError",
    "load_config",
    "parse_override",
    "keep_ratios",
    "retraining_config",
    "expand_customizations",
]


class ConfigError(Exception):
    """A config problem; the message is one line naming the problem and the fix."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).splitlines()))


# ---------------------------------------------------------------------------------------------
# YAML reading
# ---------------------------------------------------------------------------------------------

_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and rejects duplicate mapping keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key_node.value}'", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One-line description of a YAML error, with its line and column when known."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown line"
    return f"{where}: {problem}"


def _read_yaml(path: str) -> Any:
    """Parse the YAML file at ``path`` (which must exist)."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML in {path} at {_yaml_problem(err)}; fix the syntax there")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path} ({err}); check the file")


def _read_mapping(path: str) -> dict:
    """Parse a YAML file whose top level must be a mapping."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must contain a YAML mapping at the top level, "
            f"got {_kind(data)}; write 'key: value' entries"
        )
    return data


# ---------------------------------------------------------------------------------------------
# Includes
# ---------------------------------------------------------------------------------------------


def _find_include(spec: Any, including: str, where: str) -> str:
    """Absolute path of the include ``spec`` written at ``where`` in the file ``including``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"'{where}' in {including} must be a file path string; got {_show(spec)}")
    spec = os.path.expanduser(spec)
    if os.path.isabs(spec):
        candidates = [spec]
    else:
        candidates = [os.path.abspath(spec), os.path.join(os.path.dirname(including), spec)]
    candidates = list(dict.fromkeys(os.path.normpath(c) for c in candidates))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(
        f"included file '{spec}' (from '{where}' in {including}) not found; looked in "
        f"{' and '.join(candidates)}; fix the path or run from the directory it is relative to"
    )


def _enter(path: str, chain: Tuple[str, ...]) -> Tuple[str, ...]:
    """``chain`` extended by ``path``; ConfigError if ``path`` is already being loaded."""
    real = [os.path.realpath(p) for p in chain]
    if os.path.realpath(path) in real:
        cycle = " -> ".join(chain[real.index(os.path.realpath(path)):] + (path,))
        raise ConfigError(f"include cycle: {cycle}; remove one of these 'file:' entries")
    return chain + (path,)


def _load_resolved(path: str, chain: Tuple[str, ...] = ()) -> dict:
    """Read the config file ``path`` and resolve its includes recursively."""
    chain = _enter(path, chain)
    data = dict(_read_mapping(path))
    base = {}
    if "file" in data:
        base = _load_resolved(_find_include(data.pop("file"), path, "file"), chain)
    own = {key: _resolve_section(value, str(key), path, chain) for key, value in data.items()}
    return {**base, **own}


def _resolve_section(value: Any, name: str, path: str, chain: Tuple[str, ...]) -> Any:
    """Resolve a section-level ``file:`` include: included content, then sibling keys."""
    if not isinstance(value, dict) or "file" not in value:
        return value
    siblings = dict(value)
    included = _find_include(siblings.pop("file"), path, f"{name}.file")
    inner_chain = _enter(included, chain)
    content = _resolve_section(_read_yaml(included), name, included, inner_chain)
    if isinstance(content, dict):
        return {**content, **siblings}
    if siblings:
        raise ConfigError(
            f"section '{name}' in {path} adds keys beside 'file:' but {included} holds "
            f"{_kind(content)}, not a mapping; move those keys into the included file"
        )
    return content


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------


def parse_override(text: str) -> Tuple[List[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], value)``; the value is parsed as YAML."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            f"override {_show(text)} has no '='; write it as dotted.key=value, "
            "e.g. training.numEpochs=5"
        )
    key, raw = text.split("=", 1)
    path = [part.strip() for part in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"override {text!r} has an empty key part; write it as dotted.key=value")
    try:
        value = yaml.load(raw.strip(), Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r} has a malformed YAML value at {_yaml_problem(err)}")
    return path, value


def _set_path(root: dict, path: List[str], value: Any, what: str) -> None:
    """Set ``root[p0][p1]... = value``, creating missing (or null) intermediate mappings.

    An intermediate list is indexed by an integer path part (``experiments.spacing.0.maxVal``).
    """
    node = root
    for depth in range(len(path) - 1):
        key = _key_in(node, path, depth, what)
        if isinstance(node, dict) and node.get(key) is None:
            node[key] = {}
        node = node[key]
    node[_key_in(node, path, len(path) - 1, what)] = value


def _key_in(node: Any, path: List[str], depth: int, what: str) -> Any:
    """The key (mapping) or index (list) that ``path[depth]`` names inside ``node``."""
    part, here = path[depth], ".".join(path[: depth + 1])
    if isinstance(node, dict):
        return part
    if not isinstance(node, list):
        parent = ".".join(path[:depth])
        raise ConfigError(f"{what}: cannot set '{here}' because '{parent}' is {_kind(node)}, not a mapping")
    if re.fullmatch(r"-?[0-9]+", part) and -len(node) <= int(part) < len(node):
        return int(part)
    raise ConfigError(f"{what}: '{here}' is not a valid index into a list of {len(node)} entries")


def _apply_override(cfg: dict, text: str) -> None:
    """Apply one ``dotted.key=value`` override to a resolved (include-free) config."""
    path, value = parse_override(text)
    if path[-1] == "file" and len(path) <= 2:
        raise ConfigError(
            f"override {text!r} sets an include; includes are resolved before overrides, "
            "write the 'file:' in the YAML instead"
        )
    _set_path(cfg, path, value, f"override {text!r}")


# ---------------------------------------------------------------------------------------------
# Value checks: each takes (value, where) and returns the normalised value or raises
# ---------------------------------------------------------------------------------------------

Check = Callable[[Any, str], Any]


def _kind(value: Any) -> str:
    """Human name of a value's type."""
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any, limit: int = 60) -> str:
    """Short one-line repr of ``value``."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_error(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"'{where}' must be {expected}; got {_show(value)} ({_kind(value)})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(minimum: int = None) -> Check:
    """An integer, optionally ``>= minimum``."""
    expected = "an integer" if minimum is None else f"an integer >= {minimum}"

    def check(value, where):
        if not _is_int(value) or (minimum is not None and value < minimum):
            raise _type_error(where, expected, value)
        return value

    return check


def _number(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _type_error(where, "a number", value)
    return float(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _type_error(where, "a non-empty string", value)
    return value


def _optional_string(value: Any, where: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise _type_error(where, "a string or null", value)
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(where, "true or false", value)
    return value


def _mapping(value: Any, where: str) -> dict:
    """A free-form mapping with string keys (e.g. keyword arguments)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _type_error(where, "a mapping with string keys", value)
    return copy.deepcopy(value)


def _anything(value: Any, where: str) -> Any:
    return copy.deepcopy(value)


def _one_of(*choices: str) -> Check:
    def check(value, where):
        if value not in choices:
            raise _type_error(where, "one of " + ", ".join(choices), value)
        return value

    return check


def _list_of(item: Check, non_empty: bool = False, length: int = None) -> Check:
    """A list whose entries pass ``item``; optionally non-empty or of an exact length."""
    if length is not None:
        expected = f"a list of exactly {length} entries"
    else:
        expected = "a non-empty list" if non_empty else "a list"

    def check(value, where):
        if not isinstance(value, list) or (non_empty and not value) or (
            length is not None and len(value) != length
        ):
            raise _type_error(where, expected, value)
        return [item(entry, f"{where}[{i}]") for i, entry in enumerate(value)]

    return check


def _named_class(module: Any, base: type, what: str) -> Check:
    """The name of a public subclass of ``base`` (not ``base`` itself) defined in ``module``."""
    names = sorted(
        name for name, obj in vars(module).items()
        if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, base) and obj is not base
    )

    def check(value, where):
        value = _string(value, where)
        if value not in names:
            close = _close_matches(value, names)
            hint = f"did you mean {_quoted(close)}?" if close else f"choose one of {', '.join(names)}"
            raise ConfigError(f"unknown {what} {value!r} in '{where}'; {hint}")
        return value

    return check


def _close_matches(word: str, names) -> List[str]:
    """Up to three of ``names`` that look like ``word``, best first, ignoring case."""
    by_lower = {name.lower(): name for name in names}
    return [by_lower[hit] for hit in difflib.get_close_matches(word.lower(), list(by_lower), n=3)]


def _quoted(names: List[str]) -> str:
    return " or ".join(f"'{name}'" for name in names)


_optimizer = _named_class(torch.optim, torch.optim.Optimizer, "optimizer (torch.optim)")
_scheduler = _named_class(
    torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler,
    "learning-rate scheduler (torch.optim.lr_scheduler)",
)


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

_REQUIRED = object()  # default marker: the key must be given
_ABSENT = object()  # default marker: the key stays out when not given


@dataclasses.dataclass(frozen=True)
class _Field:
    """One key of a mapping: its check, its default, or the key whose value it defaults to."""

    check: Check
    default: Any = _REQUIRED
    same_as: str = None


def _check_mapping(value: Any, schema: Dict[str, _Field], where: str) -> dict:
    """Validate a mapping against ``schema``: unknown keys, missing keys, types, defaults."""
    if not isinstance(value, dict):
        raise _type_error(where, "a mapping", value)
    _reject_unknown(value, schema, where)
    out = {}
    for key, field in schema.items():
        path = f"{where}.{key}" if where else key
        if key in value:
            out[key] = field.check(value[key], path)
        elif field.same_as is not None:
            out[key] = copy.deepcopy(out[field.same_as])
        elif field.default is _REQUIRED:
            raise ConfigError(f"missing required key '{path}'; add it to the config")
        elif field.default is not _ABSENT:
            out[key] = copy.deepcopy(field.default)
    return out


def _reject_unknown(value: dict, known, where: str) -> None:
    """ConfigError for the first key of ``value`` not in ``known``, with close matches."""
    for key in value:
        if key not in known:
            path = f"{where}.{key}" if where else str(key)
            close = _close_matches(str(key), known)
            hint = f"did you mean {_quoted(close)}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key '{path}'; {hint}")


def _entry(type_check: Check = _string, **extra: _Field) -> Check:
    """A ``{type, kwargs, ...}`` entry (transforms, metrics, schedulers); kwargs default {}."""
    schema = {"type": _Field(type_check), "kwargs": _Field(_mapping, {}), **extra}
    return lambda value, where: _check_mapping(value, schema, where)


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
    "datasetKwargs": _Field(_mapping, {}),
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
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(
            f"keep ratio {ratio:g} from {where} is outside (0, 1]; "
            "keep ratios are the fraction of parameters kept"
        )


def keep_ratios(experiments: dict) -> List[float]:
    """The keep ratios of ``experiments["spacing"]``, entries concatenated in order.

    ``geometric`` = ``numpy.geomspace(maxVal, minVal, numIntervals)``, ``linear`` =
    ``numpy.linspace(maxVal, minVal, numIntervals)``, ``manual`` = ``values``. Every ratio must
    lie in (0, 1]; a missing ``spacing`` gives ``[]``.
    """
    ratios = []
    for i, raw in enumerate(experiments.get("spacing") or []):
        where = f"experiments.spacing[{i}]"
        entry = _spacing_entry(raw, where)
        if entry["type"] != "manual":  # geomspace cannot even be computed through 0
            _check_ratio(entry["maxVal"], where)
            _check_ratio(entry["minVal"], where)
        for ratio in _spacing_values(entry):
            _check_ratio(ratio, where)
            ratios.append(ratio)
    return ratios


def _check_experiments(value: Any) -> dict:
    out = _check_mapping(value, _EXPERIMENTS, "experiments")
    if "spacing" not in out:
        if out["mode"] != "train":
            raise ConfigError(
                "missing required key 'experiments.spacing'; add it (only mode 'train' may omit it)"
            )
        out["spacing"] = []
    keep_ratios(out)
    return out


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


def _validate(cfg: dict) -> dict:
    """Validate a whole include-free config and return it with all defaults filled."""
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
    return {
        **passthrough,
        "network": _check_mapping(cfg["network"], _NETWORK, "network"),
        "training": training,
        "retraining": _check_retraining(cfg.get("retraining"), raw_training, training),
        "experiments": _check_experiments(cfg["experiments"]),
        "directories": _check_mapping(cfg.get("directories") or {}, _DIRECTORIES, "directories"),
        "customizations": _check_customizations(cfg.get("customizations")),
        "seed": _integer(0)(cfg.get("seed", 0), "seed"),
        "plugins": _list_of(_string)(cfg.get("plugins", []), "plugins"),
    }


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_config(path, overrides=()) -> dict:
    """Read, include-resolve, override, validate and default-fill the config at ``path``.

    ``overrides`` are ``"dotted.key=value"`` strings (value parsed as YAML) applied after the
    includes and before validation. Customizations are validated too (each expanded config
    must be valid), but not expanded: see :func:`expand_customizations`.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    path = os.fspath(path)
    absolute = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(absolute):
        raise ConfigError(f"config file '{path}' not found (looked at {absolute}); check the path")
    cfg = _load_resolved(absolute)
    for text in overrides:
        _apply_override(cfg, text)
    cfg = _validate(cfg)
    expand_customizations(cfg)
    return cfg


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
    entries = _check_customizations(cfg.get("customizations"))
    if not entries:
        return [("", cfg)]
    expanded, seen = [], set()
    for i, entry in enumerate(entries):
        variant = copy.deepcopy(cfg)
        variant["customizations"] = []
        _follow_derived(variant, entry["key"], entry["value"])
        _set_path(variant, entry["key"], copy.deepcopy(entry["value"]), f"customizations[{i}]")
        try:
            variant = _validate(variant)
        except ConfigError as err:
            raise ConfigError(f"customizations[{i}] makes the config invalid: {err}") from None
        label = _label(entry["key"], entry["value"])
        if label in seen:
            label = f"{label}_{i}"
        seen.add(label)
        expanded.append((label, variant))
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
