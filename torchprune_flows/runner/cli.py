"""``python -m experiment CONFIG.yaml [--out DIR] [--set key=value ...] [--device cpu|cuda] [--plugin m]``.

The data path, top to bottom: :func:`main` resolves the config once (:func:`.config.resolve_config`:
the checked config and its runs, one per customization, each with its keep ratios); :func:`prepare`
turns each run into a :class:`.pipeline.Experiment` (its plan: base nets, then per repetition,
method and keep ratio one prune-retrain-evaluate step) and checks names, network and data before
anything is written; :func:`_run_all` writes each folder's ``config.yaml`` and runs the steps,
which land in the run folder (:class:`.runs.RunFolder`) and end as ``results.csv`` and
``report.md`` (:mod:`.results`, :mod:`.render`).
"""
import argparse
import os
import sys

from torchprune_flows.data.checks import DataFileError
from torchprune_flows.pruning import PruningError, canonical_method, count_parameters
from torchprune_flows.registry import (DATASETS, LOSSES, METRICS, NETWORKS, PluginImportError,
                                       UnknownNameError, load_entry_point_plugins, load_plugins)

from .checkpoints import CorruptFileError
from .config import ConfigError, load_config, resolve_config
from .runs import RunFolder
from .scaleout import ScaleOutError


class UsageError(Exception):
    """Bad input that the user can fix; printed as one line."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiment", description=__doc__.split("``")[0] or None)
    parser.add_argument("config", help="experiment YAML (torchprune's format)")
    parser.add_argument("--out", help="output folder (default: results/<config file stem>/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, value parsed as YAML (repeatable)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="import MODULE before resolving names (repeatable)")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="torch threads (default: 1 for networks under 1M parameters, else the "
                             "free cores; TORCHPRUNE_FLOWS_THREADS or OMP_NUM_THREADS also set it)")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        help="run the sweep's independent chains as N parallel Ray tasks (pip install -e '.[ray]')")
    parser.add_argument("--ray-address", metavar="ADDR", help="join the Ray cluster at ADDR instead of a local one")
    parser.add_argument("--engine", choices=["ours", "torchprune"], default="ours",
                        help="'torchprune': run torchprune's own runner on CONFIG with our networks, "
                             "datasets, losses and metrics (it needs torchprune installed; results go "
                             "to the config's directories.results)")
    return parser.parse_args(argv)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def check_names(cfg):
    """Resolve every name and build the network once, before anything is written."""
    NETWORKS.get(cfg["network"]["name"])
    DATASETS.get(cfg["network"]["dataset"])
    if cfg["experiments"].get("datasetTest"):
        DATASETS.get(cfg["experiments"]["datasetTest"])
    LOSSES.get(cfg["training"]["loss"])
    for metric in cfg["training"]["metricsTest"]:
        METRICS.get(metric["type"])
    for method in cfg["experiments"]["methods"]:
        canonical_method(method)


def check_network_kwargs(cfg):
    """``network.kwargs`` against the factory's signature (unknown keys with close matches).

    Our families pass the rest to :func:`torchprune_flows.cnf.solver.solver_spec`, which checks
    it; a plugin factory that swallows ``**kwargs`` cannot be checked: one warning line says so.
    """
    import difflib
    import inspect

    kwargs = cfg["network"].get("kwargs") or {}
    if not kwargs:
        return
    member = NETWORKS.get(cfg["network"]["name"])
    factory = getattr(member, "factory", member)
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        if not getattr(factory, "__module__", "").startswith("torchprune_flows."):
            print(f"warning: network.kwargs {sorted(kwargs)} go to {factory.__module__}.{factory.__name__}"
                  "(**kwargs), which this runner cannot check", file=sys.stderr)
        return
    fields = set(getattr(member, "family_fields", {}))
    for key in kwargs:
        if key not in params or key in fields:
            close = difflib.get_close_matches(key, [p for p in params if p not in fields], n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UsageError(f"unknown option 'network.kwargs.{key}' for {cfg['network']['name']}{hint}")


def prepare(args):
    """The checked config, the output folder and one :class:`.pipeline.Experiment` per run of the
    config (per customization); raises on bad input before anything is written."""
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda was given but no CUDA device is available; use --device cpu")
    resolved = resolve_config(args.config, args.overrides)
    cfg = resolved.cfg
    plugins = list(dict.fromkeys(list(cfg.get("plugins", [])) + args.plugins))
    load_plugins(plugins)
    load_entry_point_plugins()
    if args.plugins:  # the run records every plugin it needs, so sample/analyze load them too
        cfg["plugins"] = plugins
        for run in resolved.runs:
            run.cfg["plugins"] = plugins
    out_dir = args.out or os.path.join("results", os.path.splitext(os.path.basename(args.config))[0])
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {out_dir} is a file; give a folder (a new one, or one this config started)")
    runs = []
    for run in resolved.runs:
        check_names(run.cfg)
        check_network_kwargs(run.cfg)
        from .pipeline import Experiment

        try:
            experiment = Experiment(run, os.path.join(out_dir, run.label) if run.label else out_dir, args.device)
            experiment.num_parameters = count_parameters(experiment.build_network())
        except (TypeError, ValueError) as err:
            raise UsageError(f"cannot build network '{run.cfg['network']['name']}': {err}") from err
        try:  # load the data now: missing files are reported before anything is written
            experiment.splits
        except (FileNotFoundError, DataFileError) as err:
            raise UsageError(str(err)) from err
        runs.append(experiment)
    return cfg, out_dir, runs


def check_resume(out_dir, cfg):
    """A folder may only be resumed with the config that started it."""
    folder = RunFolder(out_dir)
    if os.path.exists(folder.config_path):
        if folder.read_config() != cfg:
            raise UsageError(f"{out_dir} holds a run of a different config; pass --out NEW_DIR or delete {out_dir}")


def _lock_folder(out_dir):
    """An exclusive lock on ``out_dir/.lock`` held until the process ends (None if taken)."""
    import fcntl

    handle = open(os.path.join(out_dir, ".lock"), "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_torchprune_engine(args):
    """``--engine torchprune``: torchprune's runner reads CONFIG itself, as it is."""
    from torchprune_flows.torchprune.engine import EngineError, run

    if args.overrides or args.out or args.device != "cpu":
        given = [flag for flag, value in (("--set", args.overrides), ("--out", args.out),
                                          ("--device", args.device != "cpu")) if value]
        print(f"error: {', '.join(given)} only apply to our runner; torchprune's runner reads CONFIG "
              "as it is (edit it, or drop --engine torchprune)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, [])
        ours_only = [key for key, value in (("network.kwargs", cfg["network"].get("kwargs")),
                                            ("training.datasetKwargs", cfg["training"].get("datasetKwargs")))
                     if value]
        if ours_only:
            raise ConfigError(f"{', '.join(ours_only)} only apply to our runner (torchprune's passes no "
                              "such arguments); drop them, or run without --engine torchprune")
        if cfg["experiments"].get("keepRatioOver") == "prunable_weights":
            raise ConfigError("experiments.keepRatioOver: prunable_weights only applies to our runner "
                              "(torchprune's keep ratios count every parameter); drop it, or run without "
                              "--engine torchprune")
        return run(args.config, list(cfg.get("plugins", [])) + args.plugins)
    except (ConfigError, PluginImportError, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.engine == "torchprune":
        return run_torchprune_engine(args)
    from .distributed import init_from_environment, is_writer

    init_from_environment(args.device)  # under torchrun: one process group, rank 0 writes
    try:
        if args.workers or args.ray_address:
            from .scaleout import _ray

            _ray()  # says what to install before anything is written
        cfg, out_dir, runs = prepare(args)
        check_resume(out_dir, cfg)
    except (ConfigError, UnknownNameError, PruningError, PluginImportError, UsageError, CorruptFileError,
            ScaleOutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .threads import use_threads

    use_threads(args.threads, max(e.num_parameters for e in runs))
    os.makedirs(out_dir, exist_ok=True)
    if not is_writer():  # another rank of this torchrun job holds the folder
        return _run_all(cfg, out_dir, runs, args)
    lock = _lock_folder(out_dir)
    if lock is None:
        print(f"error: another run is writing {out_dir}; wait for it to finish or pass --out NEW_DIR",
              file=sys.stderr)
        return 2
    with lock:
        try:
            return _run_all(cfg, out_dir, runs, args)
        except (CorruptFileError, ScaleOutError) as err:  # a damaged step record or checkpoint of an earlier run
            print(f"error: {err}", file=sys.stderr)
            return 2


def run_from_command_line(argv=None):
    """``main`` for ``python -m experiment`` and the ``torchprune-flows`` command: Ctrl-C exits 130."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted: finished steps and the last finished epoch are saved; "
              "rerun the same command to resume", file=sys.stderr)
        return 130


def _run_all(cfg, out_dir, runs, args):
    from .distributed import is_writer

    if is_writer():
        RunFolder(out_dir).write_config(cfg)
    for experiment in runs:
        if experiment.out_dir != out_dir and is_writer():
            experiment.folder.write_config(experiment.cfg)
        if args.workers or args.ray_address:
            from .scaleout import run_on_ray

            run_on_ray(experiment, experiment.run_config, args.workers or 1, args.ray_address,
                       cfg.get("plugins", []))
        else:
            experiment.run()
    print(f"results in {out_dir}: results.csv, report.md, plots/", file=sys.stderr)
    return 0
