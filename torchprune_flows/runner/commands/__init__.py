"""The commands on finished runs: ``python -m experiment.analyze SUBCOMMAND RUN_DIR ... [options]``
(and ``python -m experiment.sample``). They read runs and write reports; the analyses they call
are the library's (:mod:`torchprune_flows.analysis`).

Subcommands are the modules of this package (``--help`` lists them): ``sample`` (also
``python -m experiment.sample``), ``export``, ``hessian``, ``figure``, ``modes``, ``sweep``, ``cost``, ``paper``. Each
defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> exit code``; it reads
runs through :class:`..runs.RunFolder` and writes tables and plots through :mod:`..results` and
:mod:`..render`. Bad input (any :class:`~torchprune_flows.errors.UserError`, such as
:class:`..runs.RunError`, or a missing file) gives one ``error:`` line, exit code 2.
"""
import argparse
import importlib
import sys

from torchprune_flows.errors import UserError, reports_user_errors
from torchprune_flows.registry import load_plugins

SUBCOMMANDS = ("sample", "export", "hessian", "figure", "modes", "sweep", "cost", "paper")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m experiment.analyze", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name in SUBCOMMANDS:
        module = _module(name)
        if module is None:
            continue
        add_common_arguments(module, sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def add_common_arguments(module, parser):
    """The subcommand's own arguments and ``--plugin`` (runs record their plugins; more here)."""
    module.add_arguments(parser)
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (a run's config.yaml plugins are loaded anyway)")


def _module(name):
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            return None
        raise


@reports_user_errors
def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_subcommand(_module(args.subcommand), args)


def run_subcommand(module, args):
    """``module.run(args)``; a missing file (a dataset's, a plugin dataset's included) is a
    :class:`~torchprune_flows.errors.UserError` too (the caller's ``main`` reports it)."""
    load_plugins(getattr(args, "plugins", []))
    try:
        return module.run(args)
    except FileNotFoundError as err:
        raise UserError(str(err)) from err


__all__ = ["SUBCOMMANDS", "add_common_arguments", "build_parser", "main", "run_subcommand"]
