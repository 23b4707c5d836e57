"""``torchprune-flows CONFIG --engine torchprune``: torchprune's own runner on our flows.

The launcher

1. finds torchprune's runner: the package of torchprune's ``experiment`` distribution (regular
   or editable install) or ``src/experiment`` beside an importable ``src/torchprune`` source
   tree, and its ``param/default.yaml``, and imports it as ``experiment`` even where our own
   ``experiment`` namespace portion was found first;
2. applies :mod:`.compat` and puts FFJORD's ``lib/`` (which torchprune imports absolutely as
   ``lib.layers``) on the path;
3. registers our networks, datasets, losses and metrics, and the config's and ``--plugin``
   modules, in this process and, through the environment, in every worker process torchprune
   spawns (a spawned worker imports ``torchprune_flows`` when it re-imports the launcher's main
   module or unpickles one of our nets; :func:`prepare_worker_process` then loads the same
   plugins and patches);
4. runs ``experiment.main.main()`` on the config, unchanged: results land where torchprune puts
   them (``directories.results``).

Anything missing stops with one ``error:`` line that says what to install.
"""
import importlib
import importlib.util
import os
import sys

from . import compat

PLUGINS_ENV = "TORCHPRUNE_FLOWS_PLUGINS"

INSTALL_HINT = (
    "install torchprune v2.2.0 from its repository (it is not on PyPI): "
    "git clone https://github.com/lucaslie/torchprune && pip install --no-deps "
    "--ignore-requires-python ./torchprune/src/torchprune ./torchprune/src/experiment, and copy "
    "FFJORD's lib/ folder (github.com/rtqichen/ffjord) to torchprune/util/external/ffjord/lib"
)
DEPENDENCY_HINT = (
    "install torchprune's import-time dependencies: pip install transformers datasets cvxpy "
    "imagecorruptions 'setuptools<81' seaborn six requests tensorboard"
)


class EngineError(Exception):
    """Something the user must install or fix before torchprune's runner can start."""


def _find(name):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _is_torchprune_experiment(module):
    return hasattr(module, "Evaluator") and hasattr(module, "Logger")


def _installed_from(distribution):
    """The local folder a distribution was pip-installed from (its ``direct_url.json``), if any."""
    import importlib.metadata
    import json
    from urllib.parse import unquote, urlparse

    try:
        record = json.loads(importlib.metadata.distribution(distribution).read_text("direct_url.json") or "{}")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    url = urlparse(record.get("url", ""))
    return unquote(url.path) if url.scheme == "file" else None


def _runner_candidates():
    """Folders that may hold torchprune's ``experiment`` package, most specific first."""
    import importlib.metadata

    candidates = []
    try:
        dist = importlib.metadata.distribution("experiment")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:  # torchprune's runner distribution (ours is named torchprune-flows)
        candidates += [os.path.dirname(str(dist.locate_file(f))) for f in dist.files or []
                       if str(f).replace(os.sep, "/") == "experiment/__init__.py"]
        source = _installed_from("experiment")  # editable or local-folder installs
        if source:
            candidates.append(os.path.join(source, "experiment"))
    spec = _find("torchprune")  # a source tree: src/torchprune/torchprune -> src/experiment/experiment
    if spec is not None and spec.origin:
        candidates.append(os.path.abspath(os.path.join(os.path.dirname(spec.origin), os.pardir, os.pardir,
                                                       "experiment", "experiment")))
    loaded = sys.modules.get("experiment")
    if loaded is not None and _is_torchprune_experiment(loaded):
        candidates.insert(0, os.path.dirname(loaded.__file__))
    return candidates


def _import_runner_package(folder):
    """Import torchprune's ``experiment`` package from ``folder``, replacing our namespace portion
    (``python -m experiment``) or any other ``experiment`` that Python found first."""
    loaded = sys.modules.get("experiment")
    if loaded is not None and _is_torchprune_experiment(loaded) and \
            os.path.dirname(os.path.abspath(loaded.__file__)) == os.path.abspath(folder):
        return loaded
    for name in [m for m in sys.modules if m == "experiment" or m.startswith("experiment.")]:
        sys.modules.pop(name)
    spec = importlib.util.spec_from_file_location("experiment", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiment"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("experiment", None)
        raise
    return module


def _param_folder(runner_folder):
    """torchprune's ``param/`` folder: beside its runner or, since a regular install leaves it out
    (it is no package), in the source folder pip installed the runner from."""
    candidates = [os.path.join(runner_folder, "param")]
    source = _installed_from("experiment")
    if source:
        candidates.append(os.path.join(source, "experiment", "param"))
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "default.yaml")):
            return folder
    raise EngineError(f"torchprune's runner in {runner_folder} has no param/default.yaml (a regular install "
                      "leaves it out); install the runner from its source tree, which has it: "
                      "pip install -e ./torchprune/src/experiment")


def locate_runner():
    """The folder of torchprune's ``experiment`` package and of its ``param/`` files."""
    for folder in _runner_candidates():
        if all(os.path.isfile(os.path.join(folder, f)) for f in ("__init__.py", "main.py", "evaluator.py")):
            return folder, _param_folder(folder)
    raise EngineError(f"torchprune's runner (its 'experiment' package) is not installed; {INSTALL_HINT}")


def _read_params_from(param_folder):
    """torchprune reads ``param/*.yaml`` relative to its own files: point it at ``param_folder``."""
    files = importlib.import_module("experiment.util.file")
    original = files._get_full_param_path

    def full_param_path(file):
        try:
            return original(file)
        except FileNotFoundError:
            candidate = os.path.join(param_folder, file)
            if os.path.isfile(candidate):
                return candidate
            raise

    files._get_full_param_path = full_param_path


def _ffjord_on_path():
    """torchprune's FFJORD code imports ``lib.layers``: put its ``external/ffjord`` on the path."""
    spec = _find("torchprune")
    folder = os.path.join(os.path.dirname(spec.origin), "util", "external", "ffjord")
    if not os.path.isdir(os.path.join(folder, "lib")):
        raise EngineError(f"torchprune's FFJORD code is missing: {folder}/lib does not exist; copy "
                          "FFJORD's lib/ folder (github.com/rtqichen/ffjord) there")
    if folder not in sys.path:
        sys.path.append(folder)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if folder not in paths:  # for worker processes
        os.environ["PYTHONPATH"] = os.pathsep.join([p for p in paths if p] + [folder])


def export_to_workers(plugins):
    """Put the patches and ``plugins`` in the environment that worker processes inherit."""
    os.environ[compat.COMPAT_ENV] = "1"
    os.environ[PLUGINS_ENV] = ",".join(plugins)


def prepare_worker_process():
    """In any process whose environment the launcher set: the same patches and plugins."""
    if os.environ.get(compat.COMPAT_ENV):
        compat.apply()
    plugins = [p for p in os.environ.get(PLUGINS_ENV, "").split(",") if p]
    if plugins:
        from ..registry import load_plugins

        load_plugins(plugins)


def run(config, plugins=()):
    """Run torchprune's runner on ``config`` with our entries registered; returns its exit code."""
    from ..registry import load_plugins
    from ..registry.torchprune_bridge import install_into_torchprune

    if not os.path.isfile(config):
        raise EngineError(f"config file not found: {config}")
    if _find("torchprune") is None:
        raise EngineError(f"torchprune is not installed; {INSTALL_HINT}")
    export_to_workers(plugins)
    compat.apply()
    _ffjord_on_path()
    load_plugins(list(plugins))
    try:
        runner_folder, param_folder = locate_runner()
        install_into_torchprune()
        _import_runner_package(runner_folder)
        runner = importlib.import_module("experiment.main")
        _read_params_from(param_folder)
    except ModuleNotFoundError as err:
        raise EngineError(f"torchprune cannot be imported ({err}); {DEPENDENCY_HINT}") from err
    argv = sys.argv
    sys.argv = ["experiment.main", config]
    try:
        runner.main()
    finally:
        sys.argv = argv
    return 0
