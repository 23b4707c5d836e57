"""``python -m experiment.analyze SUBCOMMAND RUN_DIR ... [options]``: analyses of finished runs.

Subcommands are the modules of :mod:`experiment.analyses` (``--help`` lists them). Bad input
(raised as :class:`experiment.runs.RunError` and friends) gives one ``error:`` line, exit code 2.
"""
import argparse
import importlib
import sys

from torchprune_flows.data.checks import DataFileError
from torchprune_flows.pruning import PruningError
from torchprune_flows.registry import UnknownNameError

from .runs import RunError

SUBCOMMANDS = ("hessian", "figure", "modes", "sweep", "cost")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m experiment.analyze", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name in SUBCOMMANDS:
        module = _module(name)
        if module is None:
            continue
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def _module(name):
    try:
        return importlib.import_module(f"{__package__}.analyses.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__package__}.analyses.{name}":
            return None
        raise


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _module(args.subcommand).run(args)
    except (RunError, PruningError, UnknownNameError, FileNotFoundError, DataFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
