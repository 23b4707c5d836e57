"""Reading a config: YAML, ``file:`` includes and ``--set``-style overrides, before any checks.

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
import os
import re
from typing import Any, List, Tuple

import yaml

from .checks import ConfigError, _kind, _show


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
        raise ConfigError(f"malformed YAML in {path} at {_yaml_problem(err)}; fix the syntax there") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path} ({err}); check the file") from err


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
        raise ConfigError(f"override {text!r} has a malformed YAML value at {_yaml_problem(err)}") from err
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


def read_config(path, overrides=()) -> dict:
    """The config at ``path`` with its includes resolved and ``overrides`` applied (unchecked)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    path = os.fspath(path)
    absolute = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(absolute):
        inside = sorted(f for f in os.listdir(absolute) if f.endswith((".yaml", ".yml")))[:3]
        hint = f", e.g. {os.path.join(path, inside[0])}" if inside else ""
        raise ConfigError(f"config '{path}' is a folder; give one experiment YAML file{hint}")
    if not os.path.isfile(absolute):
        raise ConfigError(f"config file '{path}' not found (looked at {absolute}); check the path")
    cfg = _load_resolved(absolute)
    for text in overrides:
        _apply_override(cfg, text)
    return cfg
