"""The results table: its columns, the reference net's name, the CSV codec, summaries, formatting.

An experiment produces one result row (a ``dict`` with the keys in :data:`RESULT_COLUMNS`) per
finished step. This module owns that table, and everything that turns it into cells of other
tables: the pipeline writes ``results.csv`` through it, :mod:`.render` draws the report from it,
and every analysis reads rows, formats numbers and writes its own tables (``*.md`` / ``*.csv``)
with it (:func:`markdown_table`, :func:`table_csv`, :func:`format_percent`).

Conventions:

* A row counts as *converged* when ``converged`` is true **and** its ``test_loss`` is finite.
  Loss statistics use converged rows only.
* Standard deviations are population std's (``ddof=0``), so a single net gives a std of 0.
* Summaries group keep ratios after rounding to :data:`_RATIO_DECIMALS` decimals so that
  ``1 - 0.7`` and ``0.3`` land in the same group (grouping only; finding a step of a run
  folder is :class:`.runs.RunFolder`'s job and is exact).

(A little over 350 lines on purpose: every rule about what a cell of a results table says --
columns, codec, convergence, grouping, number formats -- lives in this one file.)
"""

import csv
import io
import math
import re

import numpy as np

from .atomic_files import save_text

#: Method name of the unpruned reference network (prune ratio 0 %); the one definition.
REFERENCE = "ReferenceNet"

#: Method name of the dense control (``experiments.control: dense``): the reference net retrained
#: through the cascade's cycles without pruning (keep ratio 1.0; its rows differ by ``cycle``).
DENSE_CONTROL = "DenseControl"

RESULT_COLUMNS = [
    "net",
    "repetition",
    "method",
    "keep_ratio",
    "prune_ratio",
    "cycle",
    "params",
    "params_original",
    "test_loss",
    "test_loss_se",
    "test_metric",
    "test_metric2",
    "val_loss",
    "nfe_forward",
    "nfe_backward",
    "flops",
    "seconds_per_batch",
    "epochs",
    "seconds",
    "converged",
    "dataset",
    "network",
    "estimator",
]

#: Values of columns that step records of older runs lack.
COLUMN_DEFAULTS = {"test_loss_se": float("nan"), "estimator": "", "flops": float("nan"),
                   "seconds_per_batch": float("nan"), "cycle": None}


#: Columns that results.csv files of older runs lack (they still read back).
_ADDED_COLUMNS = ("cycle",)

_INT_COLUMNS = {"net", "repetition", "epochs", "cycle"}
_FLOAT_COLUMNS = {
    "keep_ratio",
    "prune_ratio",
    "test_loss",
    "test_loss_se",
    "test_metric",
    "test_metric2",
    "val_loss",
    "seconds",
    "flops",
    "seconds_per_batch",
}
_NUMBER_COLUMNS = {"params", "params_original", "nfe_forward", "nfe_backward"}
_BOOL_COLUMNS = {"converged"}
_STR_COLUMNS = {"method", "dataset", "network", "estimator"}

_RATIO_DECIMALS = 8
_INT_PATTERN = re.compile(r"^[+-]?\d+$")


# --------------------------------------------------------------------------
# CSV storage
# --------------------------------------------------------------------------
def _sort_key(row):
    """Sort rows by (net, repetition, method, -keep_ratio, cycle)."""
    return (
        int(row["net"]),
        int(row["repetition"]),
        str(row["method"]),
        -float(row["keep_ratio"]),
        row.get("cycle") or 0,
    )


def check_columns(row, allow_extra=False):
    """Raise ``ValueError`` if ``row`` lacks (or, unless allowed, has extra) columns."""
    keys = set(row)
    missing = [c for c in RESULT_COLUMNS if c not in keys]
    extra = [] if allow_extra else sorted(str(k) for k in keys - set(RESULT_COLUMNS))
    if missing or extra:
        raise ValueError(
            f"result row has missing columns {missing} / extra columns {extra}"
        )


def _to_int(value, column):
    """Convert ``value`` to ``int``, refusing to drop a fractional part."""
    as_int = int(value)
    if as_int != value:
        raise ValueError(f"column {column!r} expects an integer, got {value!r}")
    return as_int


def _encode_value(column, value):
    """Encode one cell as text (``None`` becomes the empty string)."""
    if value is None:
        return ""
    if column in _INT_COLUMNS:
        return str(_to_int(value, column))
    if column in _FLOAT_COLUMNS:
        return repr(float(value))
    if column in _NUMBER_COLUMNS:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return str(int(value))
        return repr(float(value))
    if column in _BOOL_COLUMNS:
        return "True" if bool(value) else "False"
    return str(value)


def _decode_bool(text, column):
    """Parse ``True``/``False`` (as written by :func:`_encode_value`)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError(f"column {column!r}: cannot parse boolean from {text!r}")


def _decode_value(column, text):
    """Decode one cell from text, restoring its type."""
    if text == "":
        return None
    if column in _INT_COLUMNS:
        return int(text)
    if column in _FLOAT_COLUMNS:
        return float(text)
    if column in _NUMBER_COLUMNS:
        return int(text) if _INT_PATTERN.match(text) else float(text)
    if column in _BOOL_COLUMNS:
        return _decode_bool(text, column)
    return text


def write_results_csv(rows, path):
    """Write result rows to ``path`` as CSV, atomically.

    The header is exactly :data:`RESULT_COLUMNS`; rows are sorted by
    ``(net, repetition, method, -keep_ratio, cycle)``.  Floats are written with
    ``repr`` so they read back bit-identical (``nan``/``inf`` included);
    ``None`` is written as an empty cell.  Data is written to a temporary
    file in the target directory which then replaces ``path``.

    Raises ``ValueError`` for rows with missing or unknown columns.
    """
    rows = list(rows)
    for row in rows:
        check_columns(row)
    rows.sort(key=_sort_key)

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(RESULT_COLUMNS)
    for row in rows:
        writer.writerow([_encode_value(c, row[c]) for c in RESULT_COLUMNS])
    save_text(buffer.getvalue(), path)


def read_results_csv(path):
    """Read rows written by :func:`write_results_csv` with types restored.

    ``net``, ``repetition``, ``epochs`` become ``int``; ratios, losses,
    metrics and ``seconds`` become ``float``; ``params*`` and ``nfe_*``
    become ``int`` when written as integers, else ``float``; ``converged``
    becomes ``bool``; empty cells become ``None``. A file of an older run, whose header lacks
    only columns added since (``cycle``), reads with those columns' :data:`COLUMN_DEFAULTS`.

    Raises ``ValueError`` if the header differs from :data:`RESULT_COLUMNS` otherwise.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        legacy = [c for c in RESULT_COLUMNS if c not in _ADDED_COLUMNS]
        if header not in (RESULT_COLUMNS, legacy):
            raise ValueError(
                f"{path}: unexpected CSV header {header}, expected {RESULT_COLUMNS}"
            )
        rows = []
        for line_no, cells in enumerate(reader, start=2):
            if len(cells) != len(header):
                raise ValueError(
                    f"{path}:{line_no}: expected {len(header)} cells, "
                    f"got {len(cells)}"
                )
            cells = dict(zip(header, cells))
            rows.append({c: _decode_value(c, cells[c]) if c in cells else COLUMN_DEFAULTS[c]
                         for c in RESULT_COLUMNS})
    return rows


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------
def ratio_key(keep_ratio):
    """A keep (or prune) ratio rounded so that equal ratios group together in summaries."""
    return round(float(keep_ratio), _RATIO_DECIMALS)


def is_finite(value):
    """True for a real, finite number (``None`` and bools excluded)."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def is_converged(row):
    """A row converged if flagged so and its test loss is finite."""
    return bool(row["converged"]) and is_finite(row["test_loss"])


def finite_mean(values):
    """Mean of the finite values, NaN if there are none."""
    finite = [float(v) for v in values if is_finite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _group_rows(rows):
    """Group rows by (dataset, method, rounded keep ratio), the dense control's also by cycle
    (all its rows keep every weight), keeping order."""
    groups = {}
    for row in rows:
        cycle = row.get("cycle") if row["method"] == DENSE_CONTROL else None
        key = (row["dataset"], row["method"], ratio_key(row["keep_ratio"]), cycle)
        groups.setdefault(key, []).append(row)
    return groups


def _summarize_group(key, group):
    """Summary dict for the rows of one (dataset, method, keep ratio[, cycle])."""
    dataset, method, keep, cycle = key
    if cycle is None:  # a pruned method: the first cycle at this keep ratio (None for rows of old runs)
        cycle = min((r["cycle"] for r in group if r.get("cycle") is not None), default=None)
    converged = [r for r in group if is_converged(r)]
    losses = [float(r["test_loss"]) for r in converged]
    if losses:
        loss_mean, loss_std = float(np.mean(losses)), float(np.std(losses))
    else:
        loss_mean = loss_std = float("nan")
    return {
        "dataset": dataset,
        "network": group[0]["network"],
        "method": method,
        "keep_ratio": keep,
        "prune_ratio": ratio_key(1.0 - keep),
        "cycle": cycle,
        "test_loss_mean": loss_mean,
        "test_loss_std": loss_std,
        # a single run's standard error over its test samples (the spread of one number)
        "test_loss_se": float(converged[0].get("test_loss_se", float("nan")) or float("nan"))
        if len(converged) == 1 else float("nan"),
        "estimators": ordered_unique(str(r.get("estimator") or "") for r in group if r.get("estimator")),
        "n_converged": len(losses),
        "n_total": len(group),
        "params_mean": finite_mean(r["params"] for r in group),
        "nfe_forward_mean": finite_mean(r["nfe_forward"] for r in converged),
        "flops_mean": finite_mean(r.get("flops", float("nan")) for r in group),
        "seconds_per_batch_mean": finite_mean(r.get("seconds_per_batch", float("nan")) for r in converged),
        "nfe_backward_mean": finite_mean(r["nfe_backward"] for r in converged),
    }


def summarize(rows):
    """Aggregate result rows per (dataset, method, keep_ratio); the dense
    control's rows (all at keep ratio 1.0) per cycle.

    Returns one dict per group, sorted by (dataset, method, prune ratio, cycle),
    with keys ``dataset``, ``network`` (of the first row), ``method``,
    ``keep_ratio``, ``prune_ratio``, ``cycle`` (the control's; a pruned
    method's first at that ratio), ``test_loss_mean``/``test_loss_std``
    (over converged rows, i.e. over (net, repetition); population std;
    NaN when none converged), ``n_converged``, ``n_total``, the mean of the
    finite ``params`` over all rows of the group (``params_mean``) and the
    means of the finite ``nfe_forward``/``nfe_backward`` values over the
    converged rows (``nfe_forward_mean``/``nfe_backward_mean``; NaN when
    none converged, since a diverged solve says little about the NFE).
    """
    summary = [_summarize_group(k, g) for k, g in _group_rows(rows).items()]
    summary.sort(key=lambda s: (str(s["dataset"]), str(s["method"]), s["prune_ratio"], s["cycle"] or 0))
    return summary


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------
def format_param_count(count):
    """Format a parameter count compactly with 3 significant digits.

    ``642 -> "642"``, ``43325 -> "43.3K"``, ``820613 -> "821K"``,
    ``6698666 -> "6.70M"``.  Non-finite input gives ``"N/A"``.
    """
    if not is_finite(count):
        return "N/A"
    count = float(count)
    if abs(round(count)) < 1000:
        return str(int(round(count)))
    for scale, suffix in ((1e3, "K"), (1e6, "M"), (1e9, "B"), (1e12, "T")):
        scaled = float(f"{count / scale:.3g}")
        if abs(scaled) < 1000 or suffix == "T":
            decimals = max(0, 2 - int(math.floor(math.log10(abs(scaled)))))
            return f"{scaled:.{decimals}f}{suffix}"
    raise AssertionError("unreachable")


def _loss_decimals(mean):
    """3 decimals for |mean| < 1, else 2."""
    return 3 if abs(mean) < 1 else 2


def format_mean_std(mean, std, decimals=None, count=None, se=None):
    """Format ``"mean ± std"`` (when ``count`` is 1: ``"mean ± se"`` with a finite standard error
    ``se``, else just the mean); ``"N/A"`` if the mean is not finite.

    ``decimals=None`` picks 3 decimals for ``|mean| < 1`` and 2 otherwise.
    """
    if not is_finite(mean):
        return "N/A"
    if decimals is None:
        decimals = _loss_decimals(mean)
    if count == 1:
        return f"{mean:.{decimals}f} ± {se:.{decimals}f}" if se is not None and is_finite(se) else f"{mean:.{decimals}f}"
    std = std if is_finite(std) else 0.0
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def format_percent(prune_ratio, decimals=2):
    """A ratio as a percentage with up to ``decimals`` decimals, no trailing zeros (0.125 -> '12.5')."""
    text = f"{100.0 * prune_ratio:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_nfe_pair(forward, backward):
    """``"F / B"`` mean number of function evaluations (``"N/A"`` if none)."""
    if not (is_finite(forward) or is_finite(backward)):
        return "N/A"

    def one(value):
        return f"{value:.1f}" if is_finite(value) else "N/A"

    return f"{one(forward)} / {one(backward)}"


# --------------------------------------------------------------------------
# Tables of any kind (the report's and the analyses')
# --------------------------------------------------------------------------
def ordered_unique(values):
    """Unique values in order of first appearance."""
    return list(dict.fromkeys(values))


_ALIGN = {"l": "---", "c": ":---:", "r": "---:"}


def markdown_table(header, body, align=None):
    """Markdown table lines from a header and rows of strings.

    ``align``: one letter per column, ``l`` / ``c`` / ``r`` (default: the first column left,
    the others centred).
    """
    align = align or "l" + "c" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(_ALIGN[a] for a in align) + "|")
    lines.extend("| " + " | ".join(cells) + " |" for cells in body)
    return lines


def table_csv(rows, columns):
    """CSV text of ``rows`` (dicts) in ``columns``: floats by ``repr`` (they read back exactly),
    a missing value as an empty cell, other keys ignored, ``\n`` line ends."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()
