"""``cost``: what solving the flows costs -- NFE-F, NFE-B, time (and memory) per batch against prune ratio.

``python -m experiment.analyze cost [RUN_DIR ...] [--benchmark bench.json ...] [--out DIR]``
writes ``cost.md`` and ``cost_*.png`` plots (default folder: the first RUN_DIR's ``analysis/``,
or ``./cost_report/`` for benchmark files alone).

Inputs and the quantities taken from them:

* a finished experiment folder (``results.csv``, ``steps/*.json``, ``logs/<step>.jsonl``), or a
  folder whose sub-folders are such runs (the ``<out>/<customization>/`` folders of a config with
  ``customizations``, e.g. the solver sweeps in ``experiment_configs/ffjord/solvers/``):

  - *NFE-F (test)*: ``results.csv`` ``nfe_forward``, the mean NFE of the density solve per test
    batch at evaluation;
  - *NFE-B*: ``results.csv`` ``nfe_backward``, the mean NFE of the backward pass (adjoint solve,
    or the evaluations backprop differentiates) per training batch in the last training epoch;
  - *train NFE-F / NFE-B*: the per-epoch means of the step's training log, weighted by the
    epoch's number of batches, over all its epochs;
  - *time per training batch*: the sum of the epochs' ``seconds`` (wall time of the training
    batches -- forward, backward, optimizer step; validation excluded) over the sum of their
    ``batches``, both from the training log (runs logged before these fields existed show N/A);

  all averaged over the converged rows (converged flag and a finite test loss) of each method
  and keep ratio; prune ratio 0 is the unpruned ReferenceNet, drawn as every method's first point.

* a pytest-benchmark JSON (``pytest benchmarks/ --benchmark-only --benchmark-json=FILE``):
  per case the mean and std of the timed rounds (``stats``: seconds per forward + backward pass
  of one batch) and ``extra_info``'s ``nfe_forward`` / ``nfe_backward`` (of the last timed
  pass), ``method``, ``keep_ratio`` (reached), ``family``, ``solver_method``, ``gradient`` and
  ``backend``, and ``peak_memory_mib`` (peak tensor memory of one pass; a fourth panel, N/A in
  files written before it existed). Cases are shown per benchmark group, one line per (solver
  configuration, method).

(Over 350 lines because it reads two kinds of input into one report; each half is one section.)
"""
import json
import math
import os
import re


from ..atomic_files import save_text
from ..render import save_figure
from ..results import (DENSE_CONTROL, REFERENCE, finite_mean, format_param_count, format_percent, is_converged,
                       is_finite, markdown_table, ratio_key, read_results_csv)
from ..runs import RunError, RunFolder, result_subfolders

HELP = "NFE-F, NFE-B, time and memory per batch against prune ratio, from runs and/or pytest-benchmark JSON"

DENSE = "dense"
_PANELS = (("nfe_forward", "NFE-F"), ("nfe_backward", "NFE-B"), ("seconds", "time per batch (ms)"),
           ("peak_memory_mib", "peak memory per batch (MiB)"))
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D")


def add_arguments(parser):
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                        help="finished experiment folder(s) (results.csv, logs/), or a folder of such runs")
    parser.add_argument("--benchmark", action="append", default=[], metavar="JSON",
                        help="pytest-benchmark JSON written by --benchmark-json (repeatable)")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/analysis/, or ./cost_report/)")


def run(args):
    if not args.run_dirs and not args.benchmark:
        raise RunError("give at least one RUN_DIR or --benchmark JSON file to report on")
    runs = [(label, folder, load_run(label, folder))
            for run_dir in args.run_dirs for label, folder in _expand_run_dir(run_dir)]
    benchmarks = [(path, load_benchmarks(path)) for path in args.benchmark]
    out = args.out or (RunFolder(args.run_dirs[0]).analysis_dir if args.run_dirs else "cost_report")
    paths = write_cost_report(runs, benchmarks, out)
    print(f"cost report: {paths[0]} ({len(paths) - 1} plots)")
    return 0


# --------------------------------------------------------------------------------------------
# finished runs
# --------------------------------------------------------------------------------------------
def _expand_run_dir(run_dir):
    """``[(label, folder)]``: the run itself, or its sub-folders holding a results.csv."""
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir} is not a folder; pass an experiment output folder (its --out)")
    if os.path.exists(RunFolder(run_dir).results_path):
        return [(os.path.basename(os.path.normpath(run_dir)), run_dir)]
    children = result_subfolders(run_dir)
    if not children:
        raise RunError(f"{run_dir} has no results.csv (nor sub-folders with one); "
                       "pass the --out folder of a finished run")
    return [(name, os.path.join(run_dir, name)) for name in children]


def training_cost(log_path):
    """``{"nfe_forward", "nfe_backward", "seconds"}`` per training batch from a step's log (NaN if unknown)."""
    nan = {"nfe_forward": math.nan, "nfe_backward": math.nan, "seconds": math.nan}
    if not os.path.exists(log_path):
        return nan
    with open(log_path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    if not records:
        return nan
    weights = [r.get("batches", 1) for r in records]
    cost = {}
    for key in ("nfe_forward", "nfe_backward"):
        pairs = [(w, r[key]) for w, r in zip(weights, records) if is_finite(r.get(key))]
        total = sum(w for w, _ in pairs)
        cost[key] = sum(w * v for w, v in pairs) / total if total else math.nan
    timed = [r for r in records if is_finite(r.get("seconds")) and r.get("batches")]
    batches = sum(r["batches"] for r in timed)
    cost["seconds"] = sum(r["seconds"] for r in timed) / batches if timed and len(timed) == len(records) else math.nan
    return cost


def load_run(label, run_dir):
    """Cost summary of one finished run: a list of dicts per (method, keep ratio)."""
    folder = RunFolder(run_dir)
    folder.steps = folder.read_records()
    try:
        rows = read_results_csv(folder.results_path)
    except ValueError as err:
        raise RunError(f"cannot read {run_dir}/results.csv: {' '.join(str(err).split())}") from None
    if not rows:
        raise RunError(f"{run_dir}/results.csv has no rows; finish the run first")
    groups = {}
    for row in rows:
        if row["method"] == DENSE_CONTROL:  # cost against prune ratio: the control prunes nothing
            continue
        step = folder.find(row["net"], row["repetition"], row["method"], row["keep_ratio"])
        train = training_cost(folder.log(step)) if step else training_cost("")
        groups.setdefault((row["method"], ratio_key(row["keep_ratio"])), []).append((row, train))
    summary = []
    for (method, keep), members in groups.items():
        converged = [(r, t) for r, t in members if is_converged(r)]
        summary.append({
            "run": label, "dataset": members[0][0]["dataset"], "network": members[0][0]["network"],
            "method": method, "keep_ratio": keep, "prune_ratio": ratio_key(1.0 - keep),
            "params": finite_mean(r["params"] for r, _ in members),
            "nfe_forward": finite_mean(r["nfe_forward"] for r, _ in converged),
            "nfe_backward": finite_mean(r["nfe_backward"] for r, _ in converged),
            "train_nfe_forward": finite_mean(t["nfe_forward"] for _, t in converged),
            "train_nfe_backward": finite_mean(t["nfe_backward"] for _, t in converged),
            "seconds": finite_mean(t["seconds"] for _, t in converged),
            "n_converged": len(converged), "n_total": len(members),
        })
    summary.sort(key=lambda s: (s["method"] != REFERENCE, s["method"], s["prune_ratio"]))
    return summary


# --------------------------------------------------------------------------------------------
# pytest-benchmark JSON
# --------------------------------------------------------------------------------------------
def _solver_label(info):
    parts = [info.get(k) for k in ("solver_method", "gradient", "backend")]
    if all(parts):
        return " / ".join(str(p) for p in parts)
    return str(info.get("solver") or "solver n/a")


def load_benchmarks(path):
    """Cases of a pytest-benchmark JSON as flat dicts; raises RunError on anything else."""
    if not os.path.isfile(path):
        raise RunError(f"benchmark file {path} does not exist; write one with "
                       "'pytest benchmarks/ --benchmark-only --benchmark-json=FILE'")
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{path} is not a JSON file ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise RunError(f"{path} is not pytest-benchmark JSON (no 'benchmarks' list)")
    cases = []
    for entry in data["benchmarks"]:
        if not isinstance(entry, dict):
            continue
        info = entry.get("extra_info") or {}
        stats = entry.get("stats") or {}
        if not (is_finite(info.get("nfe_forward")) and is_finite(info.get("nfe_backward")) and is_finite(stats.get("mean"))):
            continue
        method = str(info.get("method") or DENSE)
        keep = float(info["keep_ratio"]) if is_finite(info.get("keep_ratio")) else 1.0
        cases.append({
            "name": str(entry.get("name", "?")),
            "group": str(entry.get("group") or info.get("family") or "ungrouped"),
            "family": str(info.get("family", "")),
            "network": str(info.get("network", "")),
            "solver": _solver_label(info),
            "method": method,
            "keep_ratio": keep,
            "prune_ratio": 1.0 - keep,
            "params": info.get("params", math.nan),
            "batch": info.get("batch"),
            "nfe_forward": float(info["nfe_forward"]),
            "nfe_backward": float(info["nfe_backward"]),
            "seconds": float(stats["mean"]),
            "seconds_std": float(stats["stddev"]) if is_finite(stats.get("stddev")) else math.nan,
            "rounds": stats.get("rounds"),
            "peak_memory_mib": float(info["peak_memory_mib"]) if is_finite(info.get("peak_memory_mib")) else math.nan,
        })
    if not cases:
        raise RunError(f"{path} has no benchmark case with nfe_forward / nfe_backward in extra_info "
                       "and a mean time; was it written by 'pytest benchmarks/ --benchmark-only'?")
    return cases


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------
def format_nfe(value):
    """NFE: an integer as is, a mean with one decimal, N/A when unknown."""
    if not is_finite(value):
        return "N/A"
    value = float(value)
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def format_ms(seconds, like=None):
    """Seconds as milliseconds with 3-4 significant digits (``0.1234 -> "123"``, ``0.01234 -> "12.3"``);
    ``like``: format with the decimals that the time ``like`` gets (for a std next to its mean)."""
    if not is_finite(seconds):
        return "N/A"
    ms, scale = 1e3 * float(seconds), abs(1e3 * float(like if is_finite(like) else seconds))
    decimals = 0 if scale >= 100 else 1 if scale >= 10 else 2
    return f"{ms:.{decimals}f}"


def format_time(seconds, std=None, rounds=None):
    """``"mean ± std"`` in ms; just the mean for a single round or an unknown std."""
    text = format_ms(seconds)
    if is_finite(std) and (rounds is None or rounds > 1):
        text += f" ± {format_ms(std, like=seconds)}"
    return text


def format_mib(value):
    """Memory in MiB with one decimal; N/A when unknown."""
    return f"{float(value):.1f}" if is_finite(value) else "N/A"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _series(entries, line_key, dense_methods):
    """``{line label: sorted [(prune %, entry)]}``; dense / reference points join every method's line."""
    lines = {}
    for entry in entries:
        config, method = line_key(entry)
        if method in dense_methods:
            continue
        lines.setdefault((config, method), []).append(entry)
    for entry in entries:
        config, method = line_key(entry)
        if method not in dense_methods:
            continue
        targets = [k for k in lines if k[0] == config]
        for target in targets or [(config, method)]:
            lines.setdefault(target, []).append(entry)
    return {k: sorted(v, key=lambda e: e["prune_ratio"]) for k, v in lines.items()}


def _plot(entries, line_key, dense_methods, title, path, panels=_PANELS):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = _series(entries, line_key, dense_methods)
    configs = list(dict.fromkeys(k[0] for k in lines))
    methods = list(dict.fromkeys(k[1] for k in lines))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    try:
        for ax, (key, ylabel) in zip(axes, panels):
            for (config, method), points in lines.items():
                points = [p for p in points if is_finite(p[key])]
                if not points:
                    continue
                label = method if config is None else f"{config} | {method}"
                scale = 1e3 if key == "seconds" else 1.0
                style = methods.index(method)
                ax.plot([100.0 * p["prune_ratio"] for p in points], [scale * p[key] for p in points],
                        marker=_MARKERS[style % len(_MARKERS)], color=colors[configs.index(config) % len(colors)],
                        linestyle=_LINESTYLES[style % len(_LINESTYLES)], alpha=0.85, label=label)
            ax.set_xlabel("Prune ratio (%)")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize="small")
        fig.suptitle(title)
        rows = math.ceil(len(labels) / 3) if handles else 0
        fig.tight_layout(rect=(0, min(0.45, 0.07 * rows + 0.02), 1, 1))
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
_RUN_PANELS = (("nfe_forward", "NFE-F (test, per batch)"), ("nfe_backward", "NFE-B (last epoch, per batch)"),
               ("seconds", "time per training batch (ms)"))


def _run_sections(summaries, out_dir):
    lines, plots = [], []
    for label, folder, summary in summaries:
        networks = ", ".join(dict.fromkeys(str(s["network"]) for s in summary))
        datasets = ", ".join(dict.fromkeys(str(s["dataset"]) for s in summary))
        lines += [f"### Run `{label}`: {networks} on {datasets}", "", f"Folder: `{folder}`", ""]
        header = ["Method", "Prune ratio (%)", "Params", "NFE-F (test)", "NFE-B", "train NFE-F", "train NFE-B",
                  "time / train batch (ms)", "converged"]
        body = [[s["method"], format_percent(s["prune_ratio"]), format_param_count(s["params"]),
                 format_nfe(s["nfe_forward"]), format_nfe(s["nfe_backward"]), format_nfe(s["train_nfe_forward"]),
                 format_nfe(s["train_nfe_backward"]), format_ms(s["seconds"]), f"{s['n_converged']}/{s['n_total']}"]
                for s in summary]
        lines += markdown_table(header, body) + [""]
    by_dataset = {}
    for _, _, summary in summaries:
        for entry in summary:
            by_dataset.setdefault(str(entry["dataset"]), []).append(entry)
    for dataset, entries in by_dataset.items():
        several = len({e["run"] for e in entries}) > 1
        path = os.path.join(out_dir, f"cost_run_{_slug(dataset)}.png")
        _plot(entries, lambda e, several=several: (e["run"] if several else None, e["method"]), {REFERENCE},
              f"{dataset}: cost against prune ratio", path, _RUN_PANELS)
        plots.append(path)
        lines += [f"![{dataset} cost]({os.path.basename(path)})", ""]
    return lines, plots


def _benchmark_sections(path, cases, out_dir, index):
    lines = [f"### `{path}`", ""]
    plots = []
    groups = {}
    for case in cases:
        groups.setdefault(case["group"], []).append(case)
    for group, members in groups.items():
        solvers = list(dict.fromkeys(c["solver"] for c in members))
        members.sort(key=lambda c: (solvers.index(c["solver"]), round(c["prune_ratio"], 2), c["method"] != DENSE,
                                    c["method"]))
        networks = ", ".join(dict.fromkeys(c["network"] for c in members if c["network"]))
        batches = ", ".join(dict.fromkeys(str(c["batch"]) for c in members if c["batch"] is not None))
        lines += [f"#### {group}" + (f" ({networks}, batch {batches})" if networks else ""), ""]
        header = ["Solver (method / gradient / backend)", "Pruning", "Keep ratio", "Prune ratio (%)", "Params",
                  "NFE-F", "NFE-B", "time / batch (ms)", "rounds", "peak memory (MiB)"]
        body = [[c["solver"], c["method"], f"{c['keep_ratio']:.3f}", format_percent(c["prune_ratio"]),
                 format_param_count(c["params"]), format_nfe(c["nfe_forward"]), format_nfe(c["nfe_backward"]),
                 format_time(c["seconds"], c["seconds_std"], c["rounds"]), str(c["rounds"]),
                 format_mib(c["peak_memory_mib"])] for c in members]
        lines += markdown_table(header, body) + [""]
        plot_path = os.path.join(out_dir, f"cost_bench{index}_{_slug(group)}.png")
        _plot(members, lambda c: (c["solver"], c["method"]), {DENSE}, group, plot_path)
        plots.append(plot_path)
        lines += [f"![{group}]({os.path.basename(plot_path)})", ""]
    return lines, plots


def write_cost_report(runs, benchmarks, out_dir):
    """Write ``out_dir/cost.md`` and its plots; returns the written paths, report first.

    ``runs``: ``(label, folder, load_run(label, folder))`` per run; ``benchmarks``:
    ``(path, load_benchmarks(path))`` per JSON file.
    """
    os.makedirs(out_dir, exist_ok=True)
    lines = ["# Solver cost against prune ratio", ""]
    plots = []
    if runs:
        lines += ["## Experiment runs", "",
                  "NFE-F (test): mean NFE of the density solve per test batch (results.csv). "
                  "NFE-B: mean NFE of the backward pass per training batch in the last training epoch "
                  "(results.csv). train NFE-F / NFE-B: per-batch means over all training epochs "
                  "(logs/<step>.jsonl). Time per training batch: the epochs' `seconds` (training batches "
                  "only: forward, backward, optimizer step) over their `batches` (logs/<step>.jsonl). "
                  "Means over converged runs; 0 % is the unpruned ReferenceNet.", ""]
        section, run_plots = _run_sections(runs, out_dir)
        lines += section
        plots += run_plots
    if benchmarks:
        lines += ["## Benchmarks", "",
                  "Time per batch: pytest-benchmark's mean ± std over the timed rounds of one forward + "
                  "backward pass (NLL of the batch and its gradient). NFE-F / NFE-B: the pass's function "
                  "evaluations summed over CNF blocks (extra_info). Peak memory: the tensor memory one more "
                  "(untimed) pass allocates at its peak, above what was allocated before it (extra_info; "
                  "the adjoint's is independent of the number of steps, backprop's grows with it). "
                  "Keep ratio: the one reached by pruning; "
                  "the dense net is every method's 0 % point in the plots.", ""]
        for index, (path, cases) in enumerate(benchmarks):
            section, bench_plots = _benchmark_sections(path, cases, out_dir, index)
            lines += section
            plots += bench_plots
    report = os.path.join(out_dir, "cost.md")
    save_text("\n".join(lines).rstrip() + "\n", report)
    return [report] + plots
