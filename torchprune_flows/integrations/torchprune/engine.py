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

from ...errors import UserError
from . import compat

PLUGINS_ENV = "TORCHPRUNE_FLOWS_PLUGINS"
#: FFJORD's ``lib/`` folder (or the FFJORD clone holding it), for installs of torchprune without it
FFJORD_LIB_ENV = "TORCHPRUNE_FLOWS_FFJORD_LIB"
_FFJORD_LIB_MODULE = "torchprune.util.external.ffjord.lib"

INSTALL_HINT = (
    "install torchprune v2.2.0 from its repository (it is not on PyPI): "
    "git clone https://github.com/lucaslie/torchprune && pip install --no-deps "
    "--ignore-requires-python --use-pep517 -e ./torchprune/src/torchprune -e ./torchprune/src/experiment, and point "
    f"{FFJORD_LIB_ENV} at FFJORD's lib/ folder (git clone https://github.com/rtqichen/ffjord)"
)
DEPENDENCY_HINT = (
    "install torchprune's import-time dependencies: pip install transformers datasets cvxpy "
    "imagecorruptions seaborn six requests tensorboard 'setuptools<81' (imagecorruptions needs "
    "setuptools' pkg_resources, which setuptools 81 removed)"
)


class EngineError(UserError):
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


def _torchprune_folder():
    """The folder of the importable ``torchprune`` package (EngineError if it is none)."""
    spec = _find("torchprune")
    if spec is None:
        raise EngineError(f"torchprune is not installed; {INSTALL_HINT}")
    if not spec.origin or not os.path.isfile(spec.origin):  # a namespace package: a folder without __init__.py
        places = ", ".join(spec.submodule_search_locations or []) or "a folder"
        raise EngineError(f"'torchprune' imports as {places}, a folder without __init__.py (a clone of its "
                          "repository in the current folder?), not as torchprune's package; run from another "
                          "folder, or use the torchprune-flows command, which does not look in the current folder")
    return os.path.dirname(spec.origin)


def _ffjord_lib():
    """FFJORD's ``lib/`` folder: ``$TORCHPRUNE_FLOWS_FFJORD_LIB`` (the folder, or a clone holding
    it), else torchprune's own ``util/external/ffjord/lib`` (where an editable install keeps a copy;
    a regular install leaves it out: it has no ``__init__.py``)."""
    given = os.environ.get(FFJORD_LIB_ENV)
    if given:
        for lib in (os.path.join(given, "lib"), given):
            if os.path.isdir(os.path.join(lib, "layers")):
                return os.path.abspath(lib)
        raise EngineError(f"{FFJORD_LIB_ENV}={given} holds no FFJORD lib/ folder (expected {given}/layers or "
                          f"{given}/lib/layers); point it at the lib/ folder of github.com/rtqichen/ffjord")
    lib = os.path.join(_torchprune_folder(), "util", "external", "ffjord", "lib")
    if os.path.isdir(lib):
        return lib
    raise EngineError(f"torchprune's FFJORD code is missing: {lib} does not exist (torchprune's repository lacks "
                      "it, and a regular install leaves it out); git clone https://github.com/rtqichen/ffjord and "
                      f"set {FFJORD_LIB_ENV}=/path/to/ffjord/lib (or copy that lib/ there and install torchprune "
                      "editable)")


def _ffjord_on_path():
    """torchprune imports FFJORD's ``lib`` as ``torchprune.util.external.ffjord.lib`` and, in two
    files, absolutely as ``lib``: make both resolve to :func:`_ffjord_lib` (here and, through the
    environment, in worker processes)."""
    lib = _ffjord_lib()
    os.environ[FFJORD_LIB_ENV] = lib
    _use_ffjord_lib(lib)
    folder = os.path.dirname(lib)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if folder not in paths:  # for worker processes
        os.environ["PYTHONPATH"] = os.pathsep.join([p for p in paths if p] + [folder])


def _use_ffjord_lib(lib):
    """``lib`` as ``torchprune.util.external.ffjord.lib`` and, through ``sys.path``, as ``lib``."""
    import importlib.machinery

    if os.path.dirname(lib) not in sys.path:
        sys.path.append(os.path.dirname(lib))
    if _FFJORD_LIB_MODULE not in sys.modules:
        spec = importlib.machinery.ModuleSpec(_FFJORD_LIB_MODULE, None, is_package=True)
        spec.submodule_search_locations = [lib]
        sys.modules[_FFJORD_LIB_MODULE] = importlib.util.module_from_spec(spec)


def export_to_workers(plugins):
    """Put the patches and ``plugins`` in the environment that worker processes inherit."""
    import json

    os.environ[compat.COMPAT_ENV] = "1"
    os.environ[PLUGINS_ENV] = json.dumps(list(plugins))  # file plugins are paths, which may hold commas


def _exported_plugins():
    import json

    text = os.environ.get(PLUGINS_ENV, "")
    try:
        plugins = json.loads(text) if text.startswith("[") else text.split(",")
    except ValueError:
        plugins = []
    return [p for p in plugins if isinstance(p, str) and p]


def prepare_worker_process():
    """In any process whose environment the launcher set: the same patches, FFJORD's lib and plugins."""
    if os.environ.get(compat.COMPAT_ENV):
        compat.apply()
        if os.environ.get(FFJORD_LIB_ENV) and os.path.isdir(os.environ[FFJORD_LIB_ENV]):
            _use_ffjord_lib(os.environ[FFJORD_LIB_ENV])
    plugins = _exported_plugins()
    if plugins:
        from ...registry import load_plugins

        load_plugins(plugins)


def run(config, plugins=()):
    """Run torchprune's runner on ``config`` with our entries registered; returns its exit code."""
    from ...registry import load_plugins
    from .bridge import install_into_torchprune

    if not os.path.isfile(config):
        raise EngineError(f"config file not found: {config}")
    _torchprune_folder()  # installed, and not hidden by a folder of that name
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
