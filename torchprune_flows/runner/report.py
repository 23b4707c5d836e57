"""Result storage and reporting for pruning experiments.

An experiment runner produces one result row (a ``dict`` with the keys in
:data:`RESULT_COLUMNS`) per finished pruning step.  This module

* stores such rows in a CSV file and reads them back with their types
  restored (:func:`write_results_csv`, :func:`read_results_csv`),
* aggregates them over independently trained nets (:func:`summarize`),
* renders a markdown report with paper-style tables plus plots
  (:func:`write_report`).

Conventions:

* A row counts as *converged* when ``converged`` is true **and** its
  ``test_loss`` is finite.  Loss statistics use converged rows only.
* Standard deviations are population std's (``ddof=0``), so a single net
  gives a std of exactly 0.
* Keep ratios are grouped after rounding to :data:`_RATIO_DECIMALS` decimals
  so that ``1 - 0.7`` and ``0.3`` land in the same group.
* Importing this module does not touch matplotlib; plotting selects the Agg
  backend when :func:`write_report` runs.
"""

import csv
import io
import math
import os
import re

import numpy as np

from .checkpoints import save_text

__all__ = [
    "RESULT_COLUMNS",
    "REFERENCE_METHOD",
    "write_results_csv",
    "read_results_csv",
    "summarize",
    "format_param_count",
    "format_mean_std",
    "render_markdown",
    "write_report",
]

RESULT_COLUMNS = [
    "net",
    "repetition",
    "method",
    "keep_ratio",
    "prune_ratio",
    "params",
    "params_original",
    "test_loss",
    "test_metric",
    "test_metric2",
    "val_loss",
    "nfe_forward",
    "nfe_backward",
    "epochs",
    "seconds",
    "converged",
    "dataset",
    "network",
]

#: Method name of the unpruned reference network (prune ratio 0 %).
REFERENCE_METHOD = "ReferenceNet"

_INT_COLUMNS = {"net", "repetition", "epochs"}
_FLOAT_COLUMNS = {
    "keep_ratio",
    "prune_ratio",
    "test_loss",
    "test_metric",
    "test_metric2",
    "val_loss",
    "seconds",
}
_NUMBER_COLUMNS = {"params", "params_original", "nfe_forward", "nfe_backward"}
_BOOL_COLUMNS = {"converged"}
_STR_COLUMNS = {"method", "dataset", "network"}

_RATIO_DECIMALS = 8
_INT_PATTERN = re.compile(r"^[+-]?\d+$")


# --------------------------------------------------------------------------
# CSV storage
# --------------------------------------------------------------------------
def _sort_key(row):
    """Sort rows by (net, repetition, method, -keep_ratio)."""
    return (
        int(row["net"]),
        int(row["repetition"]),
        str(row["method"]),
        -float(row["keep_ratio"]),
    )


def _check_columns(row, allow_extra=False):
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
    ``(net, repetition, method, -keep_ratio)``.  Floats are written with
    ``repr`` so they read back bit-identical (``nan``/``inf`` included);
    ``None`` is written as an empty cell.  Data is written to a temporary
    file in the target directory which then replaces ``path``.

    Raises ``ValueError`` for rows with missing or unknown columns.
    """
    rows = list(rows)
    for row in rows:
        _check_columns(row)
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
    becomes ``bool``; empty cells become ``None``.

    Raises ``ValueError`` if the header differs from :data:`RESULT_COLUMNS`.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != RESULT_COLUMNS:
            raise ValueError(
                f"{path}: unexpected CSV header {header}, expected {RESULT_COLUMNS}"
            )
        rows = []
        for line_no, cells in enumerate(reader, start=2):
            if len(cells) != len(RESULT_COLUMNS):
                raise ValueError(
                    f"{path}:{line_no}: expected {len(RESULT_COLUMNS)} cells, "
                    f"got {len(cells)}"
                )
            rows.append(
                {c: _decode_value(c, t) for c, t in zip(RESULT_COLUMNS, cells)}
            )
    return rows


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------
def _ratio_key(keep_ratio):
    """Keep ratio rounded so that equal ratios group together."""
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
    """Group rows by (dataset, method, rounded keep ratio), keeping order."""
    groups = {}
    for row in rows:
        key = (row["dataset"], row["method"], _ratio_key(row["keep_ratio"]))
        groups.setdefault(key, []).append(row)
    return groups


def _summarize_group(key, group):
    """Summary dict for the rows of one (dataset, method, keep ratio)."""
    dataset, method, keep = key
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
        "prune_ratio": round(1.0 - keep, _RATIO_DECIMALS),
        "test_loss_mean": loss_mean,
        "test_loss_std": loss_std,
        "n_converged": len(losses),
        "n_total": len(group),
        "params_mean": finite_mean(r["params"] for r in group),
        "nfe_forward_mean": finite_mean(r["nfe_forward"] for r in converged),
        "nfe_backward_mean": finite_mean(r["nfe_backward"] for r in converged),
    }


def summarize(rows):
    """Aggregate result rows per (dataset, method, keep_ratio).

    Returns one dict per group, sorted by (dataset, method, prune ratio),
    with keys ``dataset``, ``network`` (of the first row), ``method``,
    ``keep_ratio``, ``prune_ratio``, ``test_loss_mean``/``test_loss_std``
    (over converged rows, i.e. over (net, repetition); population std;
    NaN when none converged), ``n_converged``, ``n_total``, the mean of the
    finite ``params`` over all rows of the group (``params_mean``) and the
    means of the finite ``nfe_forward``/``nfe_backward`` values over the
    converged rows (``nfe_forward_mean``/``nfe_backward_mean``; NaN when
    none converged, since a diverged solve says little about the NFE).
    """
    summary = [_summarize_group(k, g) for k, g in _group_rows(rows).items()]
    summary.sort(key=lambda s: (str(s["dataset"]), str(s["method"]), s["prune_ratio"]))
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


def format_mean_std(mean, std, decimals=None, count=None):
    """Format ``"mean ± std"`` (just the mean when ``count`` is 1); ``"N/A"`` if the mean is not finite.

    ``decimals=None`` picks 3 decimals for ``|mean| < 1`` and 2 otherwise.
    """
    if not is_finite(mean):
        return "N/A"
    if decimals is None:
        decimals = _loss_decimals(mean)
    if count == 1:
        return f"{mean:.{decimals}f}"
    std = std if is_finite(std) else 0.0
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def format_percent(prune_ratio):
    """Prune ratio as a percentage without trailing zeros (0.125 -> '12.5')."""
    text = f"{100.0 * prune_ratio:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _format_nfe(forward, backward):
    """``"F / B"`` mean number of function evaluations (``"N/A"`` if none)."""
    if not (is_finite(forward) or is_finite(backward)):
        return "N/A"

    def one(value):
        return f"{value:.1f}" if is_finite(value) else "N/A"

    return f"{one(forward)} / {one(backward)}"


# --------------------------------------------------------------------------
# Markdown report
# --------------------------------------------------------------------------
def _ordered_unique(values):
    """Unique values in order of first appearance."""
    return list(dict.fromkeys(values))


def _method_columns(dataset_summary):
    """Pruning methods shown as table columns (ReferenceNet folded in)."""
    methods = _ordered_unique(s["method"] for s in dataset_summary)
    pruned = [m for m in methods if m != REFERENCE_METHOD]
    return pruned or methods


def _cell_lookup(dataset_summary, methods):
    """Map (prune ratio, method) -> summary entry, ReferenceNet at 0 %.

    The reference summary fills the 0 % cell of every method that has no
    entry of its own at prune ratio 0.
    """
    lookup = {(s["prune_ratio"], s["method"]): s for s in dataset_summary}
    reference = [s for s in dataset_summary if s["method"] == REFERENCE_METHOD]
    if reference:
        for method in methods:
            lookup.setdefault((reference[0]["prune_ratio"], method), reference[0])
    return lookup


def _table_ratios(lookup, methods):
    """Prune ratios that have at least one cell, increasing."""
    return sorted({ratio for ratio, method in lookup if method in methods})


def _row_params(lookup, ratio, methods):
    """Params of the first method that has an entry at ``ratio``."""
    for method in methods:
        if (ratio, method) in lookup:
            return lookup[(ratio, method)]["params_mean"]
    return float("nan")


def markdown_table(header, body):
    """Render a markdown table from a header list and rows of strings."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|")
    lines.extend("| " + " | ".join(cells) + " |" for cells in body)
    return lines


def _loss_table(lookup, ratios, methods, decimals):
    """Table S4-style loss table (mean ± std per method and prune ratio)."""
    header = ["Prune ratio (%)", "Number of parameters"] + list(methods)
    body = []
    for ratio in ratios:
        cells = [format_percent(ratio), format_param_count(_row_params(lookup, ratio, methods))]
        for method in methods:
            entry = lookup.get((ratio, method))
            if entry is None:
                cells.append("–")
            else:
                cells.append(
                    format_mean_std(entry["test_loss_mean"], entry["test_loss_std"], decimals,
                                    entry["n_converged"])
                )
        body.append(cells)
    return markdown_table(header, body)


def _nfe_table(lookup, ratios, methods):
    """Table of mean NFE-F / NFE-B per method and prune ratio."""
    header = ["Prune ratio (%)"] + [f"{m} (NFE-F / NFE-B)" for m in methods]
    body = []
    for ratio in ratios:
        cells = [format_percent(ratio)]
        for method in methods:
            entry = lookup.get((ratio, method))
            cells.append(
                "–" if entry is None
                else _format_nfe(entry["nfe_forward_mean"], entry["nfe_backward_mean"])
            )
        body.append(cells)
    return markdown_table(header, body)


def _convergence_note(dataset_summary):
    """Sentence stating how many rows did not converge (and where)."""
    total = sum(s["n_total"] for s in dataset_summary)
    failed = [s for s in dataset_summary if s["n_converged"] < s["n_total"]]
    n_failed = sum(s["n_total"] - s["n_converged"] for s in failed)
    note = f"{n_failed} of {total} runs did not converge"
    if not failed:
        return note + "."
    details = ", ".join(
        f"{s['method']} at {format_percent(s['prune_ratio'])} %: "
        f"{s['n_total'] - s['n_converged']}/{s['n_total']}"
        for s in failed
    )
    return note + f" ({details}); N/A: no converged run."


def _dataset_section(dataset, dataset_summary, loss_label, decimals):
    """Markdown lines for one dataset: loss table, note, NFE table."""
    methods = _method_columns(dataset_summary)
    lookup = _cell_lookup(dataset_summary, methods)
    ratios = _table_ratios(lookup, methods)
    networks = ", ".join(_ordered_unique(str(s["network"]) for s in dataset_summary))
    n_nets = max(s["n_total"] for s in dataset_summary)
    lines = [f"## {dataset} ({networks})", ""]
    lines.append(
        f"{loss_label[:1].upper() + loss_label[1:]}, mean ± std over up to {n_nets} runs "
        f"(converged runs only); prune ratio 0 % is the unpruned {REFERENCE_METHOD}."
    )
    lines.append("")
    lines += _loss_table(lookup, ratios, methods, decimals)
    lines += ["", _convergence_note(dataset_summary), ""]
    lines += ["### Number of function evaluations", ""]
    lines.append("Mean NFE-F / NFE-B (forward / backward) over converged runs.")
    lines.append("")
    lines += _nfe_table(lookup, ratios, methods)
    lines.append("")
    return lines


def render_markdown(rows, title=None, loss_label="test loss", decimals=None):
    """Return the markdown report for ``rows`` as a string."""
    summary = summarize(rows)
    lines = [f"# {title or 'Pruning results'}", ""]
    for dataset in _ordered_unique(s["dataset"] for s in summary):
        dataset_summary = [s for s in summary if s["dataset"] == dataset]
        lines += _dataset_section(dataset, dataset_summary, loss_label, decimals)
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------
def _safe_name(name):
    """File-system safe version of a dataset name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "dataset"


def _finite_series(entries, key):
    """(prune %, value, entry) for entries whose ``key`` is finite."""
    return [
        (100.0 * e["prune_ratio"], e[key], e) for e in entries if is_finite(e[key])
    ]


def _plot_against_prune_ratio(plt, dataset_summary, methods, path, key, ylabel, std_key=None):
    """``key`` vs. prune ratio per method (with a ±``std_key`` band), reference dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for method in methods:
            entries = [s for s in dataset_summary if s["method"] == method]
            series = _finite_series(entries, key)
            if not series:
                continue
            x = np.array([p for p, _, _ in series])
            y = np.array([v for _, v, _ in series])
            (line,) = ax.plot(x, y, marker="o", label=method)
            if std_key is not None:
                std = np.array([e[std_key] for _, _, e in series])
                std = np.where(np.isfinite(std), std, 0.0)
                ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2)
        _reference_line(ax, dataset_summary, key)
        ax.set_xlabel("Prune ratio (%)")
        ax.set_ylabel(ylabel)
        ax.set_title(str(dataset_summary[0]["dataset"]))
        _finish_axes(ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _reference_line(ax, dataset_summary, key):
    """Draw the ReferenceNet value of ``key`` as a horizontal dashed line."""
    for entry in dataset_summary:
        if entry["method"] == REFERENCE_METHOD and is_finite(entry[key]):
            ax.axhline(entry[key], color="black", linestyle="--", label=REFERENCE_METHOD)
            return


def _finish_axes(ax):
    """Grid and legend (only if something is labelled)."""
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _write_plots(summary, plot_dir, loss_label):
    """Write ``<dataset>_loss.png`` and ``<dataset>_nfe.png`` per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    paths = []
    for dataset in _ordered_unique(s["dataset"] for s in summary):
        dataset_summary = [s for s in summary if s["dataset"] == dataset]
        methods = _method_columns(dataset_summary)
        methods = [m for m in methods if m != REFERENCE_METHOD]
        loss_path = os.path.join(plot_dir, f"{_safe_name(dataset)}_loss.png")
        nfe_path = os.path.join(plot_dir, f"{_safe_name(dataset)}_nfe.png")
        _plot_against_prune_ratio(plt, dataset_summary, methods, loss_path, "test_loss_mean", loss_label,
                                  std_key="test_loss_std")
        _plot_against_prune_ratio(plt, dataset_summary, methods, nfe_path, "nfe_forward_mean", "NFE-F")
        paths += [loss_path, nfe_path]
    return paths


def write_report(rows, out_dir, title=None, loss_label="test loss", decimals=None):
    """Write ``out_dir/report.md`` and ``out_dir/plots/*.png``.

    ``title`` defaults to "Pruning results"; ``loss_label`` names the loss in
    the text and on the y axis; ``decimals`` fixes the number of decimals of
    the loss cells (default: 3 if |mean| < 1 else 2).  Returns the written
    paths, report first.  Raises ``ValueError`` if ``rows`` is empty or a
    row lacks a column of :data:`RESULT_COLUMNS` (extra keys are ignored).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("write_report: no result rows")
    for row in rows:
        _check_columns(row, allow_extra=True)
    os.makedirs(out_dir, exist_ok=True)
    report_path = os.path.join(out_dir, "report.md")
    save_text(render_markdown(rows, title, loss_label, decimals) + "\n", report_path)
    plot_paths = _write_plots(summarize(rows), os.path.join(out_dir, "plots"), loss_label)
    return [report_path] + plot_paths
