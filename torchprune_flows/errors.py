"""The one kind of error a user can fix, and how every command line reports it.

Every exception the package raises for bad input (a config, a name, a run folder, a data file,
a plugin, a launch that cannot work) derives from :class:`UserError`; the existing names
(``ConfigError``, ``RunError``, ``UnknownNameError``, ...) are its subclasses, some also of
``ValueError``, ``KeyError``, ``ImportError`` or ``FileNotFoundError`` for callers that catch
those. Each command line (``python -m experiment``, ``experiment.sample``, ``experiment.analyze``,
``python -m torchprune_flows.registry``, ``--engine torchprune``) wraps its ``main`` in
:func:`reports_user_errors`: a :class:`UserError` becomes one ``error: ...`` line on stderr and
exit code 2, raised before anything is written. Any other exception is a bug and keeps its
traceback.

This module imports nothing of the package, so every module may import it.
"""
import functools
import sys

#: the exit code of a command stopped by a :class:`UserError`
USER_ERROR_EXIT = 2


class UserError(Exception):
    """Bad input the user can fix; its message says what and how, in one line."""


def error_line(err):
    """``error: <message>`` on one line (a message's line breaks become spaces)."""
    return "error: " + " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def reports_user_errors(main):
    """Decorator for a command's ``main``: a :class:`UserError` is printed as one ``error:``
    line on stderr and ``main`` returns :data:`USER_ERROR_EXIT`."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(error_line(err), file=sys.stderr)
            return USER_ERROR_EXIT

    return wrapper


def check_keep_ratio(ratio, name="keep ratio", where=None, error=UserError):
    """``ratio`` unless it lies outside (0, 1], then ``error`` saying so: ``name`` is how the user
    gave it (``keep ratio``, ``--keep``), ``where`` where (``experiments.spacing[1]``)."""
    if not 0.0 < ratio <= 1.0:
        source = f" from {where}" if where else ""
        raise error(f"{name} {ratio:g}{source} is outside (0, 1]; a keep ratio is the fraction of "
                    "parameters kept (1 keeps all)")
    return ratio
