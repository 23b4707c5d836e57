"""Make every registry entry visible to torchprune's experiment runner.

torchprune resolves YAML names with ``getattr`` on four modules, at call time:

=================  ===========================  =========================================
registry           torchprune module            how the runner calls the entry
=================  ===========================  =========================================
``NETWORKS``       ``torchprune.util.models``    ``f(num_classes=..)`` (+ ``num_in_channels=1``)
``DATASETS``       ``torchprune.util.datasets``  ``cls(root=.., train=.., download=True, ..)``
``LOSSES``         ``torchprune.util.nn_loss``   ``cls(**lossKwargs)(outputs, targets)``
``METRICS``        ``torchprune.util.metrics``   ``cls(outputSize, **kw)(outputs, targets)``
=================  ===========================  =========================================

:func:`install_into_torchprune` therefore

- sets every exact-name entry as a module attribute (datasets stay classes),
- installs a PEP 562 module ``__getattr__`` that resolves family names such as
  ``ffjord_l2_h128_sigmoid_da`` through the registry (chained after any ``__getattr__`` the
  module already had; unknown names raise ``AttributeError``),
- listens to every registry so entries registered later (user plugins) are installed too.

torchprune's own attributes are never replaced: a name is only (re)set when it is absent or was
set by this bridge; a conflicting torchprune attribute is kept and reported once with
:func:`warnings.warn`. Installing twice is harmless. When ``torchprune`` is not importable
nothing happens and ``False`` is returned.

Set ``TORCHPRUNE_FLOWS_NO_BRIDGE=1`` to skip the automatic installation at package import.
"""
import importlib
import importlib.util
import os
import sys
import warnings

from . import DATASETS, LOSSES, METRICS, NETWORKS
from .core import is_template

#: (registry, name of the torchprune module the runner searches for that kind)
TARGETS = (
    (NETWORKS, "torchprune.util.models"),
    (DATASETS, "torchprune.util.datasets"),
    (LOSSES, "torchprune.util.nn_loss"),
    (METRICS, "torchprune.util.metrics"),
)

# Per-module bookkeeping, stored on the torchprune module itself so that a re-imported (fresh)
# module starts clean: {"ours": names this bridge set, "warned": conflicts already reported}.
_STATE_ATTR = "__torchprune_flows_bridge__"
# Marks the module ``__getattr__`` installed by this bridge.
_GETATTR_MARK = "_torchprune_flows_bridge_getattr"
_MISSING = object()

# Registries this bridge already listens to (listeners cannot be removed, so add them once).
_listening = []


def _torchprune_available():
    try:
        return importlib.util.find_spec("torchprune") is not None
    except (ImportError, ValueError):  # e.g. a broken parent package or a module without spec
        return False


def _state(module):
    state = vars(module).get(_STATE_ATTR)
    if not isinstance(state, dict):
        state = {"ours": set(), "warned": set()}
        setattr(module, _STATE_ATTR, state)
    return state


def _existing(module, name):
    """What ``module`` itself (not this bridge) provides under ``name``, or ``_MISSING``."""
    namespace = vars(module)
    if name in namespace:
        return namespace[name]
    hook = namespace.get("__getattr__")
    if hook is not None and getattr(hook, _GETATTR_MARK, False):
        hook = hook.previous
    if hook is not None:
        try:
            return hook(name)
        except Exception:  # noqa: BLE001  (anything but a value means "not provided")
            return _MISSING
    return _MISSING


def _set_entry(module, name, obj):
    """Set ``module.name = obj`` unless torchprune already defines ``name`` itself."""
    state = _state(module)
    if name not in state["ours"]:
        existing = _existing(module, name)
        if existing is obj:
            return
        if existing is not _MISSING:
            if name not in state["warned"]:
                state["warned"].add(name)
                warnings.warn(
                    f"torchprune_flows: '{module.__name__}.{name}' is already defined by "
                    f"torchprune; keeping torchprune's and not installing torchprune_flows' "
                    f"{obj!r} (register it under another name to use it from torchprune)",
                    UserWarning,
                    stacklevel=3,
                )
            return
    setattr(module, name, obj)
    state["ours"].add(name)


def _make_getattr(module_name, registry, previous):
    def __getattr__(name):
        if previous is not None:
            try:
                return previous(name)
            except AttributeError:
                pass
        hint = ""
        if not (name.startswith("__") and name.endswith("__")):
            try:
                return registry.get(name)
            except KeyError as err:  # UnknownNameError
                hint = f" ({err})"
        raise AttributeError(f"module '{module_name}' has no attribute '{name}'{hint}")

    __getattr__.previous = previous
    setattr(__getattr__, _GETATTR_MARK, True)
    return __getattr__


def _ensure_getattr(module, registry):
    """Install the family-resolving module ``__getattr__`` once (chaining to an older one)."""
    current = vars(module).get("__getattr__")
    if current is not None and getattr(current, _GETATTR_MARK, False):
        return
    module.__getattr__ = _make_getattr(module.__name__, registry, current)


def _install_registry(module, registry):
    for name in registry.names():
        if not is_template(name):
            _set_entry(module, name, registry.get(name))
    _ensure_getattr(module, registry)


def _make_listener(registry, module_name):
    def on_register(name, obj):
        # Looked up at call time: does nothing once torchprune is gone from sys.modules and
        # follows a re-imported torchprune.
        module = sys.modules.get(module_name)
        if module is None:
            return
        try:
            if is_template(name):
                _ensure_getattr(module, registry)
            else:
                _set_entry(module, name, obj)
        except Exception as err:  # noqa: BLE001  (never break the user's registration)
            warnings.warn(
                f"torchprune_flows: could not install {registry.kind} '{name}' into "
                f"{module_name}: {err}",
                RuntimeWarning,
                stacklevel=2,
            )

    return on_register


def install_into_torchprune():
    """Install every registry entry into torchprune's lookup modules.

    Returns ``False`` (doing nothing) when ``torchprune`` cannot be imported, ``True`` otherwise.
    Safe to call repeatedly.
    """
    if not _torchprune_available():
        return False
    try:
        modules = [importlib.import_module(module_name) for _, module_name in TARGETS]
    except ImportError as err:
        warnings.warn(
            f"torchprune_flows: torchprune is present but cannot be imported ({err}); "
            "its runner will not see torchprune_flows' entries",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    for (registry, module_name), module in zip(TARGETS, modules):
        _install_registry(module, registry)
        if not any(r is registry for r in _listening):
            registry.add_listener(_make_listener(registry, module_name))
            _listening.append(registry)
    return True


def maybe_install_into_torchprune():
    """Called at package import: install when possible, never raise."""
    if os.environ.get("TORCHPRUNE_FLOWS_NO_BRIDGE", "").strip() not in ("", "0"):
        return False
    try:
        return install_into_torchprune()
    except Exception as err:  # noqa: BLE001  (importing torchprune_flows must not fail)
        warnings.warn(
            f"torchprune_flows: installing into torchprune failed ({type(err).__name__}: {err})",
            RuntimeWarning,
            stacklevel=2,
        )
        return False


__all__ = ["TARGETS", "install_into_torchprune", "maybe_install_into_torchprune"]
