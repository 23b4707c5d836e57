"""Make torchprune's experiment runner build this package's entries, the paper's names included.

torchprune resolves YAML names with ``getattr`` on four modules, at call time:

=================  ===========================  =========================================
registry           torchprune module            how the runner calls the entry
=================  ===========================  =========================================
``NETWORKS``       ``torchprune.util.models``    ``f(num_classes=..)`` (+ ``num_in_channels=1``)
``DATASETS``       ``torchprune.util.datasets``  ``cls(root=.., train=.., download=True, ..)``
``LOSSES``         ``torchprune.util.nn_loss``   ``cls(**lossKwargs)(outputs, targets)``
``METRICS``        ``torchprune.util.metrics``   ``cls(outputSize, **kw)(outputs, targets)``
=================  ===========================  =========================================

Installing into one of these modules

- sets every exact name of the registry as a module attribute, **replacing torchprune's own**
  (``ToyGaussians``, ``NLLPriorLoss``, ``ffjord_multiscale_mnist``, ...),
- replaces every attribute torchprune defines whose name one of our families parses
  (``ffjord_l4_h64_sigmoid_da``, ``ffjord_l2_hm20_f1_softplus``, ``node_l2_h3_tanh_da``, ...),
- adds a PEP 562 module ``__getattr__`` for family names torchprune lacks,
- registers our toy and tabular dataset classes as virtual subclasses of torchprune's
  ``BaseToyDataset`` / ``BaseTabularDataset``, so its runner passes them ``file_dir`` and loads
  them in the main process, as it does for its own,
- and listens to the registries, so entries registered later (plugins) are installed too.

One line on standard error says so, once per process. ``TORCHPRUNE_FLOWS_KEEP_TORCHPRUNE=1``
keeps torchprune's own implementation wherever it defines a name (ours are then reachable only
under names torchprune lacks); ``TORCHPRUNE_FLOWS_NO_BRIDGE=1`` installs nothing.

Importing ``torchprune_flows`` never imports torchprune (that pulls in transformers, cvxpy, ...):
:func:`maybe_install_into_torchprune` installs into the modules already imported and hooks the
import of the others, so the entries are there whenever torchprune's runner, or a worker process
it spawns, imports them after ``torchprune_flows``.
"""
import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

from ...registry import DATASETS, LOSSES, METRICS, NETWORKS
from ...registry.core import is_template

#: (registry, name of the torchprune module the runner searches for that kind)
TARGETS = (
    (NETWORKS, "torchprune.util.models"),
    (DATASETS, "torchprune.util.datasets"),
    (LOSSES, "torchprune.util.nn_loss"),
    (METRICS, "torchprune.util.metrics"),
)
_REGISTRY_OF = {module_name: registry for registry, module_name in TARGETS}

NO_BRIDGE_ENV = "TORCHPRUNE_FLOWS_NO_BRIDGE"
KEEP_TORCHPRUNE_ENV = "TORCHPRUNE_FLOWS_KEEP_TORCHPRUNE"

#: our dataset base class (module, name) -> torchprune's abstract base it stands for
_DATASET_BASES = {
    ("torchprune_flows.data.toy", "ToyDataset"): "BaseToyDataset",
    ("torchprune_flows.data.tabular", "TabularDataset"): "BaseTabularDataset",
}

# Stored on each torchprune module, so a re-imported (fresh) module starts clean:
# {"ours": names this bridge set, "theirs": torchprune's objects under names we replaced}.
_STATE_ATTR = "__torchprune_flows_bridge__"
_GETATTR_MARK = "_torchprune_flows_bridge_getattr"

_listening = []  # registries this bridge already listens to (listeners cannot be removed)
_announced = []  # the info line goes out once per process


def _env_flag(name):
    return os.environ.get(name, "").strip() not in ("", "0")


def ours_first():
    """Whether our implementations replace torchprune's under names both define."""
    return not _env_flag(KEEP_TORCHPRUNE_ENV)


def _state(module):
    state = vars(module).get(_STATE_ATTR)
    if not isinstance(state, dict):
        state = {"ours": set(), "theirs": {}}
        setattr(module, _STATE_ATTR, state)
    return state


def _announce():
    if _announced:
        return
    _announced.append(True)
    if ours_first():
        print("torchprune_flows: torchprune's runner builds torchprune_flows' networks, datasets, "
              "losses and metrics for every name torchprune_flows defines, the paper's included "
              f"(set {KEEP_TORCHPRUNE_ENV}=1 to keep torchprune's own)", file=sys.stderr)
    else:
        print(f"torchprune_flows: {KEEP_TORCHPRUNE_ENV} is set: torchprune keeps its own "
              "implementation wherever it defines a name; torchprune_flows adds the names it lacks",
              file=sys.stderr)


def _set_entry(module, name, obj):
    """``module.name = obj``, unless torchprune defines ``name`` and its own are to be kept."""
    state = _state(module)
    namespace = vars(module)
    if name not in state["ours"] and name in namespace:
        if namespace[name] is obj:
            return
        if not ours_first():
            return
        state["theirs"][name] = namespace[name]
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


def _family_members_defined_by(module, registry):
    """torchprune's own attribute names that one of our family templates parses."""
    state = _state(module)
    return [name for name in list(vars(module))
            if not name.startswith("_") and name not in state["ours"] and registry.parses(name)]


def _register_dataset_bases(module):
    """Our toy/tabular dataset classes count as torchprune's toy/tabular datasets."""
    for (module_name, class_name), base_name in _DATASET_BASES.items():
        ours = getattr(sys.modules.get(module_name), class_name, None)
        base = vars(module).get(base_name)
        if ours is not None and base is not None and hasattr(base, "register"):
            base.register(ours)


def _install_module(module):
    registry = _REGISTRY_OF[module.__name__]
    for name in registry.names():
        if not is_template(name):
            _set_entry(module, name, registry.get(name))
    for name in _family_members_defined_by(module, registry):
        _set_entry(module, name, registry.get(name))
    _ensure_getattr(module, registry)
    if registry is DATASETS:
        _register_dataset_bases(module)
    _announce()


def _make_listener(registry, module_name):
    def on_register(name, obj):
        # Looked up at call time: follows a re-imported torchprune, does nothing without one.
        module = sys.modules.get(module_name)
        if module is None:
            return
        try:
            if is_template(name):
                _ensure_getattr(module, registry)
                for member in _family_members_defined_by(module, registry):
                    _set_entry(module, member, registry.get(member))
            else:
                _set_entry(module, name, obj)
        except Exception as err:  # noqa: BLE001  (never break the user's registration)
            warnings.warn(f"torchprune_flows: could not install {registry.kind} '{name}' into "
                          f"{module_name}: {err}", RuntimeWarning, stacklevel=2)

    return on_register


def _listen():
    for registry, module_name in TARGETS:
        if not any(r is registry for r in _listening):
            registry.add_listener(_make_listener(registry, module_name))
            _listening.append(registry)


class _InstallAfterImport(importlib.abc.MetaPathFinder):
    """Installs into each torchprune lookup module right after it is executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _REGISTRY_OF:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            if not _env_flag(NO_BRIDGE_ENV):
                try:
                    _install_module(module)
                except Exception as err:  # noqa: BLE001  (importing torchprune must not fail)
                    warnings.warn(f"torchprune_flows: installing into {fullname} failed "
                                  f"({type(err).__name__}: {err})", RuntimeWarning, stacklevel=2)

        loader.exec_module = exec_then_install  # a loader instance serves this one module
        return spec


def _hook_imports():
    if not any(isinstance(finder, _InstallAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _InstallAfterImport())


def install_into_torchprune():
    """Import torchprune's four lookup modules and install every entry into them now.

    Returns ``False`` (doing nothing) when ``torchprune`` is not installed, ``True`` otherwise;
    raises ``ImportError`` when it is installed but cannot be imported. Safe to call repeatedly.
    """
    try:
        if importlib.util.find_spec("torchprune") is None:
            return False
    except (ImportError, ValueError):
        return False
    _listen()
    _hook_imports()
    for _, module_name in TARGETS:
        module = importlib.import_module(module_name)
        _install_module(module)  # no-op for names the import hook already installed
    return True


def maybe_install_into_torchprune():
    """Called at package import: hook torchprune's imports and install where already imported.

    Never imports torchprune and never raises; ``TORCHPRUNE_FLOWS_NO_BRIDGE=1`` skips it all.
    """
    if _env_flag(NO_BRIDGE_ENV):
        return False
    try:
        _listen()
        _hook_imports()
        for _, module_name in TARGETS:
            module = sys.modules.get(module_name)
            if module is not None:
                _install_module(module)
        return True
    except Exception as err:  # noqa: BLE001  (importing torchprune_flows must not fail)
        warnings.warn(f"torchprune_flows: installing into torchprune failed "
                      f"({type(err).__name__}: {err})", RuntimeWarning, stacklevel=2)
        return False


def resolved_by_us(kind, name):
    """Whether torchprune's lookup of ``name`` (kind: network, dataset, loss, metric) gives ours."""
    registry, module_name = next((r, m) for r, m in TARGETS if r.kind == kind)
    return getattr(importlib.import_module(module_name), name) is registry.get(name)


__all__ = ["KEEP_TORCHPRUNE_ENV", "NO_BRIDGE_ENV", "TARGETS", "install_into_torchprune",
           "maybe_install_into_torchprune", "ours_first", "resolved_by_us"]
