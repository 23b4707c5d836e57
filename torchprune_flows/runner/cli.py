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

from torchprune_flows.errors import UserError, reports_user_errors
from torchprune_flows.pruning import PruningError, canonical_method, count_parameters, pruning_method
from torchprune_flows.registry import (DATASETS, LOSSES, METRICS, NETWORKS, load_entry_point_plugins, load_plugins,
                                       plugin_reference)
from torchprune_flows.registry.suggest import did_you_mean

from .config import ConfigError, load_config, resolve_config
from .runs import RunFolder


class UsageError(UserError):
    """Bad command-line input (flags, the output folder, a launch that cannot work)."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiment", description=__doc__.split("``")[0] or None)
    parser.add_argument("config", help="experiment YAML (torchprune's format)")
    parser.add_argument("--out", help="output folder (default: results/<config file stem>/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, value parsed as YAML (repeatable)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a module name, or a .py file) before resolving names (repeatable)")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="torch threads (default: 1 for networks under 1M parameters, else the "
                             "free cores; TORCHPRUNE_FLOWS_THREADS or OMP_NUM_THREADS also set it)")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        help="run the sweep's independent chains as N parallel Ray tasks (pip install -e '.[ray]')")
    parser.add_argument("--ray-address", metavar="ADDR", help="join the Ray cluster at ADDR instead of a local one")
    parser.add_argument("--ray-timeout", type=_positive_float, default=None, metavar="SECONDS",
                        help="how long to wait for the cluster at --ray-address (default 20)")
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


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got '{text}'")
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
            hint = did_you_mean(key, [p for p in params if p not in fields], n=2)
            hint = f"; {hint}" if hint else ""
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
    plugins = list(dict.fromkeys(plugin_reference(p) for p in list(cfg.get("plugins", [])) + args.plugins))
    load_plugins(plugins)
    load_entry_point_plugins()
    if plugins != cfg.get("plugins", []):  # the run records every plugin it needs (files by their
        cfg["plugins"] = plugins  # absolute path), so sample, analyze and workers load them too
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
            splits = experiment.splits
        except FileNotFoundError as err:  # a dataset's missing files (unreadable ones raise DataFileError)
            raise UsageError(str(err)) from err
        check_split_sizes(run.cfg, splits)
        runs.append(experiment)
    if any(e.mode != "train" and not e.keep_ratios for e in runs):
        print("warning: experiments.spacing gives no keep ratio: only the base nets are trained, nothing is "
              "pruned", file=sys.stderr)
    return cfg, out_dir, runs


def check_split_sizes(cfg, splits):
    """Every split must hold at least one row (one batch): an empty one would train on nothing
    or divide by zero in its evaluation, after the reference had trained."""
    names = {"train": "training", "val": "validation", "test": "test"}
    for split, data in splits.items():
        if len(data) == 0:
            sizes = ", ".join(f"{names[s]} {len(d)}" for s, d in splits.items())
            kwargs = cfg["training"]["datasetKwargs"]
            given = f" with training.datasetKwargs {kwargs}" if kwargs else ""
            raise UsageError(f"the {names[split]} split of {cfg['network']['dataset']}{given} has no rows "
                             f"(rows per split: {sizes}; validation is 10 % of the training rows); every split "
                             "needs at least one: use more rows")


def check_resume(out_dir, cfg):
    """A folder may only be resumed with the config that started it; one in which no step has
    finished is not a run yet. Returns the earlier config's first difference (a key) when this
    config takes such a folder over (:func:`take_over`), else None."""
    folder = RunFolder(out_dir)
    if not os.path.exists(folder.config_path):
        return None
    try:
        earlier = folder.read_config()
    except (OSError, ValueError) as err:  # yaml's errors are ValueErrors
        raise UsageError(f"cannot read {folder.config_path} ({type(err).__name__}); pass --out NEW_DIR or "
                         f"delete {out_dir}") from err
    if _adds_steps_only(earlier, cfg):
        return None
    if _finished_steps(out_dir):
        raise UsageError(f"{out_dir} holds a run of a different config; pass --out NEW_DIR or delete {out_dir}")
    return _first_difference(earlier, cfg) or "config"


def _adds_steps_only(earlier, cfg):
    """``cfg`` is ``earlier`` with the dense control added or more base nets: every finished step
    stays valid (a net's seeds depend on its index only) and only steps are added."""
    def growable_part(config):
        if not isinstance(config, dict) or not isinstance(config.get("experiments"), dict):
            return config, 0
        exp = config["experiments"]
        rest = {k: v for k, v in exp.items() if k not in ("control", "numNets")}
        return {**config, "experiments": rest}, exp.get("numNets", 0)

    (before, nets_before), (after, nets_after) = growable_part(earlier), growable_part(cfg)
    return before == after and isinstance(nets_after, int) and isinstance(nets_before, int) \
        and nets_after >= nets_before


def _run_folders(out_dir):
    """``out_dir`` and its sub-folders that hold a run (a customization's)."""
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    return [out_dir] + [f.run_dir for f in map(RunFolder(out_dir).subfolder, names) if os.path.isfile(f.config_path)]


def _finished_steps(out_dir):
    return any(RunFolder(f).read_records() for f in _run_folders(out_dir))


def _first_difference(a, b, path=""):
    """The dotted key of the first entry in which ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    return path


def take_over(out_dir, difference):
    """Start a folder with no finished step afresh for this config: its earlier config's
    unfinished checkpoints and logs go (a resume would continue them), and one line says so."""
    for folder in map(RunFolder, _run_folders(out_dir)):
        for path, suffix in ((folder.checkpoints_dir, ".pt"), (folder.logs_dir, ".jsonl")):
            for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
                if name.endswith(suffix):
                    os.remove(os.path.join(path, name))
    print(f"warning: {out_dir} held no finished step of another config (it differs in {difference}); "
          "this run takes it over from the start", file=sys.stderr)


def _lock_folder(out_dir):
    """An exclusive lock on ``out_dir/.lock`` held until the process ends (None if taken)."""
    import fcntl

    handle = open(RunFolder(out_dir).lock_path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_torchprune_engine(args):
    """``--engine torchprune``: torchprune's runner reads CONFIG itself, as it is."""
    from torchprune_flows.integrations.torchprune.engine import run

    if args.overrides or args.out or args.device != "cpu":
        given = [flag for flag, value in (("--set", args.overrides), ("--out", args.out),
                                          ("--device", args.device != "cpu")) if value]
        raise UsageError(f"{', '.join(given)} only apply to our runner; torchprune's runner reads CONFIG "
                         "as it is (edit it, or drop --engine torchprune)")
    cfg = load_config(args.config, [])
    ours_only = [key for key, value in (("network.kwargs", cfg["network"].get("kwargs")),
                                        ("training.datasetKwargs", cfg["training"].get("datasetKwargs")))
                 if value]
    if ours_only:
        raise ConfigError(f"{', '.join(ours_only)} only apply to our runner (torchprune's passes no "
                          "such arguments); drop them, or run without --engine torchprune")
    if cfg["experiments"].get("control") == "dense":
        raise ConfigError("experiments.control only applies to our runner (torchprune's has no dense control); "
                          "drop it, or run without --engine torchprune")
    if cfg["experiments"].get("keepRatioOver") == "prunable_weights":
        raise ConfigError("experiments.keepRatioOver: prunable_weights only applies to our runner "
                          "(torchprune's keep ratios count every parameter); drop it, or run without "
                          "--engine torchprune")
    plugins = [plugin_reference(p) for p in list(cfg.get("plugins", [])) + args.plugins]
    load_plugins(plugins)
    ours_only = [m for m in cfg["experiments"].get("methods", []) if _only_ours(m)]
    if ours_only:
        raise ConfigError(f"pruning method {', '.join(ours_only)} runs under our runner only (torchprune's has "
                          "no such method); drop it from experiments.methods, or run without --engine torchprune")
    return run(args.config, plugins)


def _only_ours(method):
    """A registered method torchprune lacks; a name we do not know is left to torchprune's runner
    (it has methods we do not implement)."""
    try:
        return not pruning_method(method).in_torchprune
    except PruningError:
        return False


def check_launch(args):
    """Ways of starting that cannot work, before anything starts."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and (args.workers or args.ray_address):
        raise UsageError("--workers / --ray-address do not combine with torchrun (each Ray task trains in one "
                         "process): run 'torchrun ... -m experiment CONFIG' without them, or "
                         "'python -m experiment CONFIG --workers N' without torchrun")
    if args.ray_timeout is not None and not args.ray_address:
        raise UsageError("--ray-timeout is the wait for the cluster at --ray-address; give --ray-address too")


@reports_user_errors
def main(argv=None):
    """The runner; bad input (any :class:`~torchprune_flows.errors.UserError`) stops it with one
    ``error:`` line and exit code 2, before anything is written when it can be found then."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.engine == "torchprune":
        return run_torchprune_engine(args)
    from .distributed import init_from_environment, is_writer, leave_process_group

    check_launch(args)
    joined = init_from_environment(args.device)  # under torchrun: one process group, rank 0 writes
    cluster = None
    try:
        if args.workers or args.ray_address:
            from .scaleout import _ray

            _ray()  # says what to install before anything is written
        cfg, out_dir, runs = prepare(args)
        taking_over = check_resume(out_dir, cfg)
        if args.ray_address:  # joined before anything is written: a wrong address leaves nothing
            from .scaleout import CONNECT_TIMEOUT, connect

            cluster = connect(args.ray_address, args.ray_timeout or CONNECT_TIMEOUT)
        from .allocator import keep_freed_memory
        from .threads import use_threads

        use_threads(args.threads, max(e.num_parameters for e in runs))
        keep_freed_memory()
        try:
            os.makedirs(out_dir, exist_ok=True)
            lock = _lock_folder(out_dir) if is_writer() else None
        except OSError as err:
            raise UsageError(f"cannot write to {out_dir}: {err.strerror or err}") from err
        if not is_writer():  # another rank of this torchrun job holds the folder
            return _run_all(cfg, out_dir, runs, args)
        if lock is None:
            raise UsageError(f"another run is writing {out_dir}; wait for it to finish or pass --out NEW_DIR")
        with lock:
            try:
                if taking_over and check_resume(out_dir, cfg):  # again, now that no other run can write
                    take_over(out_dir, taking_over)
                return _run_all(cfg, out_dir, runs, args)
            except OSError as err:
                if err.filename is None:
                    raise
                raise UsageError(f"cannot write {err.filename} ({err.strerror or err}); finished steps are kept: "
                                 "make room (or raise the limit) and rerun the same command to complete the "
                                 "run") from err
    finally:
        if cluster is not None:
            cluster.shutdown()
        if joined and sys.exc_info()[0] is None:  # after an error a peer may never reach the barrier
            leave_process_group()


def run_from_command_line(argv=None):
    """``main`` for ``python -m experiment`` and the ``torchprune-flows`` command: Ctrl-C exits 130."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun Ctrl-C reaches every rank: one line
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
