"""Analyses of finished runs, one module per ``python -m experiment.analyze`` subcommand.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> exit code``.
"""
