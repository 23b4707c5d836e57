"""``paper RUN_DIR``: a run beside its table of the paper's supplement (S4-S12).

The table is the one of the run's dataset (:mod:`torchprune_flows.paper`). For every row of it
and every method of the table that the run has, our test loss at the finished prune ratio
nearest to the paper's (shown with its parameter count; the base nets at 0 %): the mean ± the
standard error over base nets (sample std / sqrt(n), converged nets), or with one net ± its
standard error over the test samples (``test_loss_se``, marked †). Tables S11-S12 (FT) add our
λmax, trace and κ from ``analyze hessian`` where its ``hessian.csv`` has that step. Writes
``paper.md``, ``paper.csv`` and ``paper.png`` (test NLL against prune ratio: every finished step
of ours ± its standard error, the paper's rows, the dense control by cycle, the data entropy)
into ``--out`` and (re)writes the "Paper side by side" section of the run's ``report.md`` (a
rerun replaces it).
"""
import csv
import math
import os
import re

import numpy as np

from torchprune_flows.paper import paper_tables, table_for_dataset

from ..atomic_files import save_text
from ..results import DENSE_CONTROL, REFERENCE, finite_mean, format_param_count, is_converged, markdown_table, ratio_key, table_csv
from ..runs import RunError, RunFolder
from .common import method_label, percent, prune_ratio

HELP = "the run beside the paper's table of its dataset (supplement S4-S12), nearest prune ratio per row"

SECTION_START = "<!-- paper-side-by-side: start (written by `python -m experiment.analyze paper`) -->"
SECTION_END = "<!-- paper-side-by-side: end -->"

UNITS = {"NLLPriorLoss": "nats", "NLLNatsLoss": "nats", "NLLBitsLoss": "bits/dim"}
HESSIAN_KEYS = ("lambda_max", "trace", "kappa")

COLUMNS = ["table", "method", "paper_prune_ratio", "paper_nll", "ours_prune_ratio", "ours_params", "ours_nll",
           "ours_se", "se_kind", "nets_converged", "nets", "paper_lambda_max", "ours_lambda_max", "paper_trace",
           "ours_trace", "paper_kappa", "ours_kappa"]


def add_arguments(parser):
    parser.add_argument("run_dir", help="output folder of a run (its config.yaml and steps/)")
    parser.add_argument("--repetition", type=int, default=0, help="pruning repetition (default 0)")
    parser.add_argument("--hessian", help="hessian.csv of `analyze hessian` (default: RUN_DIR/analysis/hessian.csv; "
                                          "used for Tables S11-S12 when it exists)")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/analysis/)")


# -- our side --------------------------------------------------------------------------
def our_points(steps, method, repetition=0):
    """``{rounded prune ratio: [result rows]}`` of ``method``'s finished steps, the base nets at 0."""
    points = {}
    for row in steps.values():
        if row["method"] == REFERENCE or (row["method"] == method and row["repetition"] == repetition):
            points.setdefault(ratio_key(prune_ratio(row)), []).append(row)
    return points


def nearest_ratio(ratios, target):
    """The ratio closest to ``target`` (the smaller one on a tie)."""
    return min(sorted(ratios), key=lambda r: abs(r - target))


def loss_statistics(rows):
    """Mean test loss over the converged rows (nets) with its standard error: over the nets
    (sample std / sqrt(n), ``se_kind`` "nets") or, for one net, its test-set one ("test-set")."""
    converged = [r for r in rows if is_converged(r)]
    losses = np.array([float(r["test_loss"]) for r in converged])
    stats = dict(nets_converged=len(losses), nets=len(rows), params=finite_mean(r["params"] for r in rows))
    if len(losses) == 0:
        return dict(stats, mean=math.nan, se=math.nan, se_kind="")
    if len(losses) == 1:
        se = converged[0].get("test_loss_se")
        return dict(stats, mean=float(losses[0]), se=float(se) if se is not None else math.nan, se_kind="test-set")
    return dict(stats, mean=float(losses.mean()), se=float(losses.std(ddof=1) / math.sqrt(len(losses))),
                se_kind="nets")


def read_hessian(path):
    """``{(method, rounded prune ratio): [rows]}`` of a ``hessian.csv``, values as floats."""
    groups = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            values = {"lambda_max": float(row["lambda_max"]), "trace": float(row["trace"]),
                      "kappa": float(row["condition_number"]), "net": int(row["net"])}
            groups.setdefault((row["method"], ratio_key(float(row["prune_ratio"]))), []).append(values)
    return groups


def hessian_means(hessian, method, ratio):
    """Mean λmax, trace and κ over the nets that ``hessian`` has at (method, ratio); None if none."""
    rows = hessian.get((REFERENCE if ratio == 0 else method, ratio)) if hessian else None
    if not rows:
        return None
    return {key: finite_mean(r[key] for r in rows) for key in HESSIAN_KEYS}


def compare(table, steps, hessian, repetition=0, methods=None):
    """One dict per (paper row, method): the paper's values and ours at the nearest ratio."""
    out = []
    for method in methods or table.methods:
        points = our_points(steps, method, repetition)
        for paper_row in table.rows:
            ratio = nearest_ratio(points, paper_row["prune_ratio"])
            stats = loss_statistics(points[ratio])
            entry = dict(table=table.id, method=method, paper_prune_ratio=paper_row["prune_ratio"],
                         paper_nll=paper_row["nll"][method], ours_prune_ratio=ratio, ours_params=stats["params"],
                         ours_nll=stats["mean"], ours_se=stats["se"], se_kind=stats["se_kind"],
                         nets_converged=stats["nets_converged"], nets=stats["nets"], paper_row=paper_row)
            if table.kind == "hessian":
                ours = hessian_means(hessian, method, ratio)
                for key in HESSIAN_KEYS:
                    entry["paper_" + key] = paper_row[key]
                    entry["ours_" + key] = None if ours is None else ours[key]
            out.append(entry)
    return out


def figure_series(table, steps, methods, repetition=0):
    """What ``paper.png`` draws: ``{label: [(prune %, mean, se), ...]}`` for each of our methods
    (every finished step, the base nets at 0 %), the paper's NLL per method, and the dense
    control with cycle i drawn at the prune ratio of the first method's cycle i."""
    series = {}
    for method in methods:
        points = our_points(steps, method, repetition)
        stats = [(100.0 * ratio, loss_statistics(rows)) for ratio, rows in sorted(points.items())]
        series[f"ours, {method_label(method)}"] = [(x, s["mean"], s["se"]) for x, s in stats
                                                   if math.isfinite(s["mean"])]
        series[f"paper, {method_label(method)} (Table {table.id})"] = [
            (100.0 * row["prune_ratio"], row["nll"][method], math.nan) for row in table.rows
            if row["nll"].get(method) is not None and math.isfinite(row["nll"][method])]
    ratio_of_cycle = {row.get("cycle"): prune_ratio(row) for row in steps.values()
                      if methods and row["method"] == methods[0] and row["repetition"] == repetition}
    by_cycle = {}
    for row in steps.values():
        if row["method"] == DENSE_CONTROL and row.get("cycle") in ratio_of_cycle:
            by_cycle.setdefault(row["cycle"], []).append(row)
    control = []
    for cycle, rows in sorted(by_cycle.items()):
        stats = loss_statistics(rows)
        if math.isfinite(stats["mean"]):
            control.append((100.0 * ratio_of_cycle[cycle], stats["mean"], stats["se"]))
    if control:
        series[f"{DENSE_CONTROL} (unpruned; cycle i at step i)"] = control
    return series


def write_figure(series, entropy, path, title, unit):
    """``paper.png``: ``series`` with error bars (ours), markers (the paper), the entropy line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..render import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    try:
        for label, points in series.items():
            if not points:
                continue
            x, y, se = (np.array(v, dtype=float) for v in zip(*points))
            if label.startswith("paper"):
                ax.plot(x, y, linestyle="none", marker="x", markersize=8, color="black", label=label)
            elif label.startswith(DENSE_CONTROL):
                ax.errorbar(x, y, yerr=np.nan_to_num(se), color="dimgray", linestyle=":", marker="s",
                            markersize=3, capsize=2, label=label)
            else:
                ax.errorbar(x, y, yerr=np.nan_to_num(se), marker="o", markersize=3, capsize=2, label=label)
        for value, se in entropy.values():
            ax.axhline(value, color="gray", linestyle="--", label=f"data entropy ({value:.3f} ± {se:.3f})")
        ax.set_xlabel("Prune ratio (%)")
        ax.set_ylabel(f"test NLL ({unit})")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


# -- formatting ------------------------------------------------------------------------
def _fixed(value, decimals):
    return f"{value:.{decimals}f}" if value is not None and math.isfinite(value) else "N/A"


def _ours_cell(entry, decimals):
    if entry["nets_converged"] == 0:
        return "N/A"
    text = _fixed(entry["ours_nll"], decimals)
    if math.isfinite(entry["ours_se"]):
        text += f" ± {entry['ours_se']:.{decimals}f}" + ("†" if entry["se_kind"] == "test-set" else "")
    if entry["nets_converged"] < entry["nets"]:
        text += f" ({entry['nets_converged']}/{entry['nets']} nets)"
    return text


#: a step this far (absolute prune ratio) from the paper's row is only the nearest one there is
FAR = 0.015


def _far(entry):
    return abs(entry["ours_prune_ratio"] - entry["paper_prune_ratio"]) > FAR


def _at_cell(entry):
    far = " ‡" if _far(entry) else ""
    return f"{percent(entry['ours_prune_ratio'])} ({format_param_count(entry['ours_params'])}){far}"


def _hessian_cell(value, key):
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "N/A"
    if key == "kappa" and abs(value) >= 1000:
        return f"{value / 1000:.2f}k"
    return f"{value:.4g}"


def _paper_decimals(table):
    return 3 if table.kind == "hessian" else 2


def nll_table_lines(table, entries, methods):
    decimals = _paper_decimals(table)
    by_method = {m: [e for e in entries if e["method"] == m] for m in methods}
    header = ["Prune ratio (%)", "Parameters"]
    for method in methods:
        label = method_label(method)
        header += [f"{label}: paper", f"{label}: ours", f"{label}: ours at PR % (params)"]
    body = []
    for i, paper_row in enumerate(table.rows):
        cells = [str(paper_row["prune_ratio_percent"]), paper_row["parameters_text"]]
        for method in methods:
            entry = by_method[method][i]
            cells += [_fixed(entry["paper_nll"], decimals), _ours_cell(entry, decimals), _at_cell(entry)]
        body.append(cells)
    return markdown_table(header, body)


def hessian_table_lines(table, entries, with_ours):
    decimals = _paper_decimals(table)
    header = ["Model (paper)", "Prune ratio (%)", "NLL: paper", "NLL: ours", "ours at PR % (params)"]
    for symbol in ("λmax", "tr", "κ"):
        header += [f"{symbol}: paper"] + ([f"{symbol}: ours"] if with_ours else [])
    body = []
    for entry in entries:
        paper_row = entry["paper_row"]
        cells = [paper_row["model"], str(paper_row["prune_ratio_percent"]), _fixed(entry["paper_nll"], decimals),
                 _ours_cell(entry, decimals), _at_cell(entry)]
        paper_hessian = [f"{paper_row['lambda_max']:.4f}", f"{paper_row['trace']:.3f}", paper_row["kappa_text"]]
        for key, paper_text in zip(HESSIAN_KEYS, paper_hessian):
            cells += [paper_text] + ([_hessian_cell(entry["ours_" + key], key)] if with_ours else [])
        body.append(cells)
    return markdown_table(header, body)


def section_lines(table, entries, methods, cfg, notes):
    """The markdown (below a title) of the comparison."""
    lines = [f"Table {table.id} of the supplement of Sparse Flows (Liebenwein et al., NeurIPS 2021): "
             f"{table.caption}, the mean of the paper's 3 seeds; ours: {cfg['network']['name']} on "
             f"{cfg['network']['dataset']}, the finished prune ratio nearest to each of the paper's.", ""]
    if table.kind == "hessian":
        lines += hessian_table_lines(table, entries, any(e["ours_lambda_max"] is not None for e in entries))
    else:
        lines += nll_table_lines(table, entries, methods)
    kinds = {e["se_kind"] for e in entries}
    legend = []
    if "nets" in kinds:
        legend.append("ours: mean ± standard error over the base nets that converged (sample std / √n)")
    if "test-set" in kinds:
        legend.append("†: one base net, ± its standard error over the test samples (`test_loss_se`)")
    if any(_far(e) for e in entries):
        legend.append(f"‡: no finished step within {FAR * 100:.1f} points of the paper's prune ratio "
                      "(a run still in progress, or another spacing): the nearest one is shown")
    lines.append("")
    for paragraph in (["; ".join(legend) + "."] if legend else []) + notes:
        lines += [paragraph, ""]
    return lines[:-1]


def replace_section(text, section):
    """``text`` (a report) with its paper section replaced by ``section``, or ``section`` appended."""
    block = f"{SECTION_START}\n{section.strip()}\n{SECTION_END}\n"
    pattern = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\n?", re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block


# -- the command -----------------------------------------------------------------------
def _notes(table, cfg, run_methods, methods, hessian_path, hessian, entropy):
    notes = []
    unit = UNITS.get(cfg["training"]["loss"], cfg["training"]["loss"])
    if unit != table.unit:
        notes.append(f"Note: this run's loss is {unit}, Table {table.id}'s NLL is in {table.unit}: "
                     "the columns are not comparable.")
    if cfg["network"]["name"] != table.network:
        notes.append(f"Note: the paper's network for this table is `{table.network}` ({table.config}); "
                     f"this run's is `{cfg['network']['name']}`.")
    left_out = [m for m in run_methods if m not in methods]
    if left_out:
        notes.append(f"Not in Table {table.id}: {', '.join(method_label(m) for m in left_out)} "
                     f"(the table reports {', '.join(method_label(m) for m in table.methods)} only).")
    if table.kind == "hessian":
        if hessian is None:
            notes.append(f"λmax, tr, κ: the paper's only; no Hessian analysis at {hessian_path} "
                         "(`python -m experiment.analyze hessian RUN_DIR` writes it).")
        else:
            notes.append(f"Our λmax, tr, κ: from {hessian_path}, the mean over its nets (–: that step not analysed).")
    for value, se in entropy.values():
        notes.append(f"Data entropy (the true density's NLL on the normalised test distribution): "
                     f"{value:.3f} ± {se:.3f} nats.")
    return notes


def _check_table(cfg):
    dataset = cfg["network"]["dataset"]
    table = table_for_dataset(dataset)
    if table is None:
        have = ", ".join(f"{t.dataset} ({t.id})" for t in paper_tables().values())
        raise RunError(f"the paper has no table for dataset {dataset!r}; tables exist for {have}")
    return table


def run(args):
    finished = RunFolder.open(args.run_dir)
    cfg = finished.cfg
    table = _check_table(cfg)
    if not finished.steps:
        raise RunError(f"no finished steps in {args.run_dir}; run (or resume) the experiment first")
    run_methods = list(dict.fromkeys(r["method"] for r in finished.steps.values() if r["method"] != REFERENCE))
    methods = [m for m in table.methods
               if any(r["method"] == m and r["repetition"] == args.repetition for r in finished.steps.values())]
    if not methods:
        raise RunError(f"Table {table.id} reports {', '.join(method_label(m) for m in table.methods)}; "
                       f"{args.run_dir} has no finished step of it (repetition {args.repetition})")
    hessian_path = args.hessian or os.path.join(finished.analysis_dir, "hessian.csv")
    if args.hessian and not os.path.isfile(args.hessian):
        raise RunError(f"--hessian {args.hessian}: no such file (`analyze hessian` writes hessian.csv)")
    hessian = read_hessian(hessian_path) if table.kind == "hessian" and os.path.isfile(hessian_path) else None

    from ..data import build_split
    from ..pipeline import data_entropy

    entries = compare(table, finished.steps, hessian, args.repetition, methods)
    entropy = data_entropy(cfg, lambda: build_split(cfg, "test"))
    notes = _notes(table, cfg, run_methods, methods, hessian_path, hessian, entropy)
    body = section_lines(table, entries, methods, cfg, notes)
    out_dir = args.out or finished.analysis_dir
    title = f"{cfg['network']['name']} on {cfg['network']['dataset']} beside Table {table.id}"
    markdown = "\n".join([f"# Paper side by side: {title}", ""] + body) + "\n"
    save_text(table_csv([{k: v for k, v in e.items() if k != "paper_row"} for e in entries], COLUMNS),
              os.path.join(out_dir, "paper.csv"))
    save_text(markdown, os.path.join(out_dir, "paper.md"))
    write_figure(figure_series(table, finished.steps, methods, args.repetition), entropy,
                 os.path.join(out_dir, "paper.png"), title, UNITS.get(cfg["training"]["loss"], table.unit))
    report = finished.report_path
    existing = open(report, encoding="utf-8").read() if os.path.isfile(report) else ""
    save_text(replace_section(existing, "\n".join(["## Paper side by side", ""] + body)), report)
    print(markdown)
    print(f"written: {', '.join(os.path.join(out_dir, f) for f in ('paper.md', 'paper.csv', 'paper.png'))}; "
          f"section in {report}")
    return 0
