"""Rendering of the results table: ``report.md`` (paper-style tables) and ``plots/*.png``.

The table itself (columns, codec, summaries, number formatting) is :mod:`.results`; this module
only lays it out. Importing it does not touch matplotlib; plotting selects the Agg backend when
:func:`write_report` runs. Every file is written atomically (:func:`save_figure`, ``save_text``).
"""
import os
import re

import numpy as np

from .atomic_files import atomic_write, save_text
from .results import (DENSE_CONTROL, REFERENCE, check_columns, format_mean_std, format_nfe_pair, format_param_count,
                      format_percent, is_finite, markdown_table, ordered_unique, summarize)
from .runs import RunFolder

# --------------------------------------------------------------------------
# Markdown report
# --------------------------------------------------------------------------
def _method_columns(dataset_summary):
    """Pruning methods shown as table columns (ReferenceNet folded in; the dense control apart)."""
    methods = [m for m in ordered_unique(s["method"] for s in dataset_summary) if m != DENSE_CONTROL]
    pruned = [m for m in methods if m != REFERENCE]
    return pruned or methods


def _control_at_ratios(dataset_summary):
    """``[(prune ratio, entry)]`` of the dense control, cycle ``i`` at the prune ratio that cycle
    ``i`` of the cascade reached (cycle 0, the base net, at 0 %); cycles without a pruned result
    at that cycle yet are left out."""
    ratio_of_cycle = {}
    for entry in dataset_summary:
        if entry["method"] != DENSE_CONTROL and entry.get("cycle") is not None:
            ratio_of_cycle.setdefault(entry["cycle"], entry["prune_ratio"])
    controls = [e for e in dataset_summary if e["method"] == DENSE_CONTROL and e["cycle"] in ratio_of_cycle]
    if not controls:
        return []
    reference = [e for e in dataset_summary if e["method"] == REFERENCE][:1]
    return [(ratio_of_cycle[e["cycle"]], e) for e in sorted(reference + controls, key=lambda e: e["cycle"])]


def _cell_lookup(dataset_summary, methods):
    """Map (prune ratio, method) -> summary entry, ReferenceNet at 0 %.

    The reference summary fills the 0 % cell of every method that has no
    entry of its own at prune ratio 0.
    """
    lookup = {(s["prune_ratio"], s["method"]): s for s in dataset_summary}
    reference = [s for s in dataset_summary if s["method"] == REFERENCE]
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


def _method_table(lookup, ratios, methods, header, cell, lead=lambda ratio: []):
    """One row per prune ratio: ``Prune ratio (%)``, the ``lead`` cells, then ``cell(entry)``
    for each method ("–" where the method has no result at that ratio)."""
    body = []
    for ratio in ratios:
        cells = [format_percent(ratio)] + lead(ratio)
        for method in methods:
            entry = lookup.get((ratio, method))
            cells.append("–" if entry is None else cell(entry))
        body.append(cells)
    return markdown_table(["Prune ratio (%)"] + header, body)


def _loss_table(lookup, ratios, methods, decimals, cycles=None):
    """Table S4-style loss table (mean ± std per method and prune ratio); with ``cycles``
    (``{prune ratio: cycle}``, when the dense control ran) a ``Cycle`` column after the ratio."""
    pruned = [m for m in methods if m != DENSE_CONTROL]

    def lead(ratio):
        params = [format_param_count(_row_params(lookup, ratio, pruned))]
        return params if cycles is None else [str(cycles.get(ratio, "–"))] + params

    return _method_table(
        lookup, ratios, methods, ([] if cycles is None else ["Cycle"]) + ["Number of parameters"] + list(methods),
        lambda e: format_mean_std(e["test_loss_mean"], e["test_loss_std"], decimals, e["n_converged"],
                                  e.get("test_loss_se")),
        lead=lead)


def _cycles(lookup, ratios, methods):
    """``{prune ratio: the cycle of the first method's entry there}`` (0 for the base net)."""
    cycles = {}
    for ratio in ratios:
        found = [lookup[(ratio, m)].get("cycle") for m in methods if (ratio, m) in lookup]
        found = [c for c in found if c is not None]
        if found:
            cycles[ratio] = found[0]
    return cycles


def _nfe_table(lookup, ratios, methods):
    """Table of mean NFE-F / NFE-B per method and prune ratio."""
    return _method_table(lookup, ratios, methods, [f"{m} (NFE-F / NFE-B)" for m in methods],
                         lambda e: format_nfe_pair(e["nfe_forward_mean"], e["nfe_backward_mean"]))


def _format_or_na(value, spec):
    return format(value, spec) if is_finite(value) else "N/A"


def _cost_table(lookup, ratios, methods):
    """MFLOPs of one vector-field evaluation and training seconds per batch, per method and ratio."""
    return _method_table(
        lookup, ratios, methods, [f"{m} (MFLOPs / s per batch)" for m in methods],
        lambda e: f"{_format_or_na(e.get('flops_mean', float('nan')), '.4g')} / "
                  f"{_format_or_na(e.get('seconds_per_batch_mean', float('nan')), '.3g')}")


def _where(entry):
    """``ThresNet at 30 %``, or ``DenseControl cycle 2``."""
    if entry["method"] == DENSE_CONTROL:
        return f"{DENSE_CONTROL} cycle {entry['cycle']}"
    return f"{entry['method']} at {format_percent(entry['prune_ratio'])} %"


def _convergence_note(dataset_summary):
    """Sentence stating how many rows did not converge (and where)."""
    total = sum(s["n_total"] for s in dataset_summary)
    failed = [s for s in dataset_summary if s["n_converged"] < s["n_total"]]
    n_failed = sum(s["n_total"] - s["n_converged"] for s in failed)
    note = f"{n_failed} of {total} runs did not converge"
    if not failed:
        return note + "."
    details = ", ".join(
        f"{_where(s)}: {s['n_total'] - s['n_converged']}/{s['n_total']}"
        for s in failed
    )
    return note + f" ({details}); N/A: no converged run."


def data_entropy_line(entropy):
    """The data's own NLL (``(value, standard error)`` in nats) as one sentence of the report."""
    value, se = entropy
    return (f"Data entropy (the true density's NLL on the normalised test distribution, a floor for "
            f"the expected test NLL): {value:.3f} ± {se:.3f} nats (Monte Carlo ± its standard error).")


def _dataset_section(dataset, dataset_summary, loss_label, decimals, entropy=None):
    """Markdown lines for one dataset: loss table, note (and the data entropy), NFE table."""
    methods = _method_columns(dataset_summary)
    control = _control_at_ratios(dataset_summary)
    pruned_summary = [s for s in dataset_summary if s["method"] != DENSE_CONTROL]
    lookup = _cell_lookup(pruned_summary, methods)
    ratios = _table_ratios(lookup, methods)
    cycles = _cycles(lookup, ratios, methods) if control else None
    if control:  # a column beside the methods, aligned by cycle
        lookup.update({(ratio, DENSE_CONTROL): entry for ratio, entry in control})
        methods = methods + [DENSE_CONTROL]
    networks = ", ".join(ordered_unique(str(s["network"]) for s in dataset_summary))
    n_nets = max(s["n_total"] for s in dataset_summary)
    lines = [f"## {dataset} ({networks})", ""]
    lines.append(
        f"{loss_label[:1].upper() + loss_label[1:]}, mean ± std over up to {n_nets} runs "
        f"(converged runs only; a single run: ± its standard error over the test samples); "
        f"prune ratio 0 % is the unpruned {REFERENCE}."
    )
    estimators = ordered_unique(e for s in dataset_summary for e in s.get("estimators", []))
    if estimators:
        lines.append(f"Log-density estimator of these numbers: {'; '.join(estimators)}.")
    if control:
        lines.append(f"{DENSE_CONTROL}: the unpruned net retrained through the same cycles without pruning "
                     f"(cycle i in the row of the cascade's cycle i): sparsity against extra training.")
    lines.append("")
    lines += _loss_table(lookup, ratios, methods, decimals, cycles)
    lines += ["", _convergence_note(dataset_summary), ""]
    if entropy is not None:
        lines += [data_entropy_line(entropy), ""]
    lines += ["### Number of function evaluations", ""]
    lines.append("Mean NFE-F / NFE-B (forward / backward) over converged runs.")
    lines.append("")
    lines += _nfe_table(lookup, ratios, methods)
    lines.append("")
    lines += ["### Cost", ""]
    lines.append("MFLOPs of one evaluation of every vector field per sample (nonzero weights only) and "
                 "training seconds per batch (the last epoch; N/A without training).")
    lines.append("")
    lines += _cost_table(lookup, ratios, methods)
    lines.append("")
    return lines


def render_markdown(rows, title=None, loss_label="test loss", decimals=None, data_entropy=None):
    """Return the markdown report for ``rows`` as a string (``data_entropy``: see :func:`write_report`)."""
    summary = summarize(rows)
    lines = [f"# {title or 'Pruning results'}", ""]
    for dataset in ordered_unique(s["dataset"] for s in summary):
        dataset_summary = [s for s in summary if s["dataset"] == dataset]
        lines += _dataset_section(dataset, dataset_summary, loss_label, decimals, (data_entropy or {}).get(dataset))
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


def _plot_against_prune_ratio(plt, dataset_summary, methods, path, key, ylabel, std_key=None, entropy=None):
    """``key`` vs. prune ratio per method (with a ±``std_key`` band), reference dashed, the data
    entropy (``(value, se)``) dotted."""
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
        _control_line(ax, dataset_summary, key, std_key)
        if entropy is not None:
            ax.axhline(entropy[0], color="gray", linestyle=":", label="data entropy")
        ax.set_xlabel("Prune ratio (%)")
        ax.set_ylabel(ylabel)
        ax.set_title(str(dataset_summary[0]["dataset"]))
        _finish_axes(ax)
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


def _reference_line(ax, dataset_summary, key):
    """Draw the ReferenceNet value of ``key`` as a horizontal dashed line."""
    for entry in dataset_summary:
        if entry["method"] == REFERENCE and is_finite(entry[key]):
            ax.axhline(entry[key], color="black", linestyle="--", label=REFERENCE)
            return


def _control_line(ax, dataset_summary, key, std_key=None):
    """The dense control's ``key`` per cycle, drawn at the prune ratio of the cascade's cycle."""
    series = [(100.0 * ratio, e[key], e) for ratio, e in _control_at_ratios(dataset_summary) if is_finite(e[key])]
    if not series:
        return
    x = np.array([p for p, _, _ in series])
    y = np.array([v for _, v, _ in series])
    ax.plot(x, y, color="dimgray", linestyle=":", marker="s",
            label=f"{DENSE_CONTROL} (unpruned, cycle i at cascade step i)")
    if std_key is not None:
        std = np.array([e[std_key] for _, _, e in series])
        std = np.where(np.isfinite(std), std, 0.0)
        ax.fill_between(x, y - std, y + std, color="dimgray", alpha=0.15)


def _finish_axes(ax):
    """Grid and legend (only if something is labelled)."""
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _write_plots(summary, plot_dir, loss_label, data_entropy=None):
    """Write ``<dataset>_loss.png`` and ``<dataset>_nfe.png`` per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    paths = []
    for dataset in ordered_unique(s["dataset"] for s in summary):
        dataset_summary = [s for s in summary if s["dataset"] == dataset]
        methods = _method_columns(dataset_summary)
        methods = [m for m in methods if m != REFERENCE]
        loss_path = os.path.join(plot_dir, f"{_safe_name(dataset)}_loss.png")
        nfe_path = os.path.join(plot_dir, f"{_safe_name(dataset)}_nfe.png")
        _plot_against_prune_ratio(plt, dataset_summary, methods, loss_path, "test_loss_mean", loss_label,
                                  std_key="test_loss_std", entropy=(data_entropy or {}).get(dataset))
        _plot_against_prune_ratio(plt, dataset_summary, methods, nfe_path, "nfe_forward_mean", "NFE-F")
        paths += [loss_path, nfe_path]
    return paths


def write_report(rows, out_dir, title=None, loss_label="test loss", decimals=None, plots=True, data_entropy=None):
    """Write ``out_dir/report.md`` and (unless ``plots`` is false) ``out_dir/plots/*.png``.

    ``title`` defaults to "Pruning results"; ``loss_label`` names the loss in
    the text and on the y axis; ``decimals`` fixes the number of decimals of
    the loss cells (default: 3 if |mean| < 1 else 2); ``data_entropy`` maps a
    dataset to its data's own NLL ``(value, standard error)`` in nats, a line
    under its table and on its loss plot.  Returns the written
    paths, report first.  Raises ``ValueError`` if ``rows`` is empty or a
    row lacks a column of :data:`RESULT_COLUMNS` (extra keys are ignored).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("write_report: no result rows")
    for row in rows:
        check_columns(row, allow_extra=True)
    os.makedirs(out_dir, exist_ok=True)
    folder = RunFolder(out_dir)
    report_path = folder.report_path
    save_text(render_markdown(rows, title, loss_label, decimals, data_entropy) + "\n", report_path)
    plot_paths = (_write_plots(summarize(rows), folder.plots_dir, loss_label, data_entropy)
                  if plots else [])
    return [report_path] + plot_paths


def save_figure(fig, path, dpi=120):
    """Write ``fig`` as PNG at ``path`` atomically (a crash never leaves half a plot)."""
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi))
