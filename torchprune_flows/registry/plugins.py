"""Import user modules that register flows: config ``plugins:``, ``--plugin`` and entry points."""
import importlib
import importlib.metadata

ENTRY_POINT_GROUP = "torchprune_flows.plugins"
_entry_points_loaded = False


class PluginImportError(ImportError):
    pass


def load_plugins(modules):
    """Import each named module (its decorators register its entries)."""
    for name in modules or []:
        try:
            importlib.import_module(name)
        except ImportError as err:
            if getattr(err, "name", None) not in (None, name) and not name.startswith(f"{err.name}."):
                raise PluginImportError(f"plugin module '{name}' failed to import: {_last_line(err)}") from err
            raise PluginImportError(
                f"cannot import plugin module '{name}': {err}; make it importable "
                "(install it or add its folder to PYTHONPATH)"
            ) from err
        except Exception as err:  # noqa: BLE001  (any error in the plugin's own code)
            raise PluginImportError(f"plugin module '{name}' failed to import: {_last_line(err)}") from err


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
