"""Import user modules that register flows: config ``plugins:``, ``--plugin`` and entry points.

A plugin is a module name (imported as usual; one in the current folder is found too, as
``python -m`` finds it) or the path of a ``.py`` file (imported from that file under its stem,
recorded by its absolute path so that every later process finds the same file).
"""
import importlib
import importlib.metadata
import importlib.util
import os
import sys

from ..errors import UserError

ENTRY_POINT_GROUP = "torchprune_flows.plugins"
_entry_points_loaded = False


class PluginImportError(UserError, ImportError):
    """A plugin that cannot be found or raised while importing; the message names it."""


def is_plugin_file(reference):
    """Whether a plugin reference names a file (``my_flows.py``, ``./x/my_flows.py``) or a module."""
    return reference.endswith(".py") or os.sep in reference or bool(os.altsep and os.altsep in reference)


def plugin_reference(reference):
    """How a run records a plugin: a file by its absolute path, a module by its name."""
    return os.path.abspath(os.path.expanduser(reference)) if is_plugin_file(reference) else reference


def load_plugins(modules):
    """Import each plugin (a module name or a ``.py`` file; its decorators register its entries)."""
    for name in modules or []:
        if is_plugin_file(name):
            _load_file(name)
            continue
        _from_current_folder(name)
        try:
            importlib.import_module(name)
        except ImportError as err:
            if getattr(err, "name", None) not in (None, name) and not name.startswith(f"{err.name}."):
                raise PluginImportError(f"plugin module '{name}' failed to import: {_last_line(err)}") from err
            raise PluginImportError(
                f"cannot import plugin module '{name}': {err}; make it importable "
                "(install it, add its folder to PYTHONPATH, or pass the path of its .py file)"
            ) from err
        except Exception as err:  # noqa: BLE001  (any error in the plugin's own code)
            raise PluginImportError(f"plugin module '{name}' failed to import: {_last_line(err)}") from err


def _from_current_folder(name):
    """Put the current folder on ``sys.path`` (last) when it holds module ``name`` and nothing else
    does: ``python -m`` has it there, an installed command such as ``torchprune-flows`` not."""
    top = name.split(".")[0]
    cwd = os.getcwd()
    if top in sys.modules or cwd in sys.path or "" in sys.path:
        return
    if not (os.path.isfile(os.path.join(cwd, top + ".py")) or os.path.isdir(os.path.join(cwd, top))):
        return
    try:
        if importlib.util.find_spec(top) is not None:
            return
    except (ImportError, ValueError):
        return
    sys.path.append(cwd)  # spawned workers inherit sys.path; Ray adds the driver's folder itself


def _load_file(path):
    """Import the ``.py`` file at ``path`` as the module named by its stem (once per process)."""
    path = os.path.abspath(os.path.expanduser(path))
    name = os.path.splitext(os.path.basename(path))[0]
    if not os.path.isfile(path):
        raise PluginImportError(f"plugin file {path} does not exist; pass the path of a .py file or a module name")
    if not path.endswith(".py") or not name.isidentifier():
        raise PluginImportError(f"plugin file {path} must be a .py file whose name is a Python identifier "
                                "(it is imported as a module of that name)")
    loaded = sys.modules.get(name)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        if origin and os.path.realpath(origin) == os.path.realpath(path):
            return
        raise PluginImportError(f"plugin file {path} would be imported as module '{name}', but a module of that "
                                f"name is already loaded (from {origin or 'elsewhere'}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered first, like an import: pickles refer to it by name
    try:
        spec.loader.exec_module(module)
    except BaseException as err:
        sys.modules.pop(name, None)
        if isinstance(err, Exception):
            raise PluginImportError(f"plugin file {path} failed to import: {_last_line(err)}") from err
        raise


def _last_line(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__


def load_entry_point_plugins():
    """Import every module advertised under the ``torchprune_flows.plugins`` group once.

    Returns True when this call imported something (so a failed lookup may be retried).
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return False
    _entry_points_loaded = True
    loaded = False
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
        loaded = True
    return loaded
