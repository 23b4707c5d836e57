"""Data files that exist but cannot be used: one line that names the file and the problem.

:class:`DataFileError` is raised for a file that cannot be read or decompressed (truncated,
corrupt), holds the wrong number of columns, too few rows for the train/validation/test split,
or non-finite values (with the first bad row). The runner reports it as one ``error:`` line
before anything is written.
"""
import contextlib
import pickle

import numpy as np

from ..errors import UserError
from .archive import download_hint


class DataFileError(UserError, ValueError):
    """A data file that exists but is unusable; the message names it and the fix."""


def _last_line(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__


@contextlib.contextmanager
def reading(path, name, dataset, root):
    """Turn any failure to read ``path`` into one :class:`DataFileError` line."""
    try:
        yield
    except DataFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, MemoryError,
            pickle.UnpicklingError) as err:
        raise DataFileError(f"cannot read the {name} file {path} ({_last_line(err)}): it is truncated or "
                            f"corrupt; delete it and get it again ('{download_hint(dataset, root)}')") from err


def check_rows(rows, path, name, width=None, min_rows=1):
    """A 2-D array of ``rows`` from ``path``: the right width, enough rows, finite values."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise DataFileError(f"the {name} file {path} holds an array of shape {rows.shape}; expected rows "
                            f"of {width or 'some'} columns")
    if width is not None and rows.shape[1] != width:
        raise DataFileError(f"the {name} file {path} has {rows.shape[1]} columns; {name} has {width}")
    if rows.shape[0] < min_rows:
        raise DataFileError(f"the {name} file {path} has {rows.shape[0]} rows, too few for the train/"
                            f"validation/test split (at least {min_rows})")
    bad = non_finite_rows(rows)
    if len(bad):
        raise DataFileError(f"the {name} file {path} holds non-finite values (NaN or inf) in "
                            f"{len(bad)} of its {rows.shape[0]} rows, the first at row {int(bad[0])}; "
                            "clean or replace the file")
    return rows


def non_finite_rows(rows):
    """Indices of the rows of a 2-D array that hold NaN or inf."""
    return np.flatnonzero(~np.isfinite(rows).all(axis=1))


def check_splits(parts, paths, name, dim=None):
    """The preprocessed (train, val, test): each non-empty, ``dim`` wide (unless None) and finite."""
    for split, part in zip(("train", "validation", "test"), parts):
        where = " and ".join(paths)
        if part.shape[0] == 0:
            raise DataFileError(f"{name} from {where} leaves no {split} rows; the file holds too few rows")
        if part.ndim != 2 or (dim is not None and part.shape[1] != dim):
            raise DataFileError(f"{name} from {where} gives {split} rows of shape {part.shape[1:]}, expected "
                                f"({dim},); the file does not hold {name} data")
        bad = non_finite_rows(part)
        if len(bad):
            raise DataFileError(f"{name} from {where}: preprocessing gives non-finite {split} rows (first: "
                                f"{int(bad[0])}); a column is constant or the file holds NaN or inf values")
    return parts
