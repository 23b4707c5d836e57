"""A small library of config checks: each takes ``(value, where)`` and returns the normalised
value or raises :class:`ConfigError`, a one-line message naming the entry and the fix.

Nothing here knows torchprune's format (that is :mod:`.schema`); :func:`_check_mapping` checks a
mapping against a schema of :class:`_Field` entries (unknown keys with close matches, missing
keys, types, defaults). The underscored names are the package's own, not a public API.
"""
import copy
import dataclasses
import inspect
from typing import Any, Callable, Dict

from torchprune_flows.errors import UserError
from torchprune_flows.registry.suggest import close_matches, suggestion


class ConfigError(UserError):
    """A config problem; the message is one line naming the problem and the fix."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).splitlines()))


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
            hint = _did_you_mean(value, names) or f"choose one of {', '.join(names)}"
            raise ConfigError(f"unknown {what} {value!r} in '{where}'; {hint}")
        return value

    return check


def _did_you_mean(word: str, names) -> str:
    """``did you mean 'a' or 'b'?`` for up to three of ``names`` that look like ``word``
    (ignoring case), or ``""``."""
    return suggestion(close_matches(word, names, n=3, ignore_case=True), quote=True)


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
            hint = _did_you_mean(str(key), known) or f"known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key '{path}'; {hint}")
