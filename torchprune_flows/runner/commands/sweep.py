"""``sweep SWEEP_DIR``: one table and one plot of loss against prune ratio for a whole sweep.

A sweep folder is the output folder of a config with ``customizations``: one subfolder per
customization, each with its ``results.csv`` and resolved ``config.yaml``. Each variant is
labelled by what its customization changed: the config entries in which its ``config.yaml``
differs from the sweep's base config (``SWEEP_DIR/config.yaml`` without its customizations), or,
without a base config, from the other variants. Writes ``sweep.md``, ``sweep.csv`` and
``sweep.png`` into ``--out`` (default ``SWEEP_DIR``).
"""
import math
import os
import textwrap

import yaml

from ..atomic_files import save_text
from ..render import save_figure
from ..results import (DENSE_CONTROL, REFERENCE, format_mean_std, format_param_count, markdown_table,
                       read_results_csv, summarize, table_csv)
from ..runs import RunError, RunFolder, result_subfolders
from .common import method_label, percent

HELP = "summarise a customization sweep: test loss against prune ratio per variant and method"

CSV_COLUMNS = ["variant", "folder", "method", "keep_ratio", "prune_ratio", "params", "test_loss_mean",
               "test_loss_std", "n_converged", "n_total"]


def add_arguments(parser):
    parser.add_argument("sweep_dir", help="output folder of a config with customizations (one subfolder each)")
    parser.add_argument("--out", help="output folder of sweep.md / sweep.csv / sweep.png (default SWEEP_DIR)")


def find_variants(sweep_dir):
    """``[(folder name, results rows, config or None)]`` of the subfolders with a results.csv, in order.

    The order is the customizations' order when the base config lists them, else by name.
    """
    if not os.path.isdir(sweep_dir):
        raise RunError(f"{sweep_dir} is not a folder; pass the --out folder of a config with customizations")
    folders = result_subfolders(sweep_dir)
    if not folders:
        raise RunError(f"no subfolder of {sweep_dir} holds a results.csv; pass the --out folder of a config "
                       "with customizations after at least one of its runs finished a step")
    order = list(customization_entries(load_base_config(sweep_dir)))
    folders.sort(key=lambda name: (order.index(name) if name in order else len(order), name))
    variants = []
    for name in folders:
        try:
            rows = read_results_csv(RunFolder(sweep_dir).subfolder(name).results_path)
        except ValueError as err:
            raise RunError(" ".join(str(err).split())) from None
        variants.append((name, rows, _read_yaml(RunFolder(sweep_dir).subfolder(name).config_path)))
    if not any(rows for _, rows, _ in variants):
        raise RunError(f"the results.csv files under {sweep_dir} hold no result rows yet")
    return variants


def load_base_config(sweep_dir):
    return _read_yaml(RunFolder(sweep_dir).config_path)


def _read_yaml(path):
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        data = yaml.safe_load(handle)
    return data if isinstance(data, dict) else None


def customization_entries(base):
    """``{subfolder name: customization entry}`` in the base config's order (empty if unknown)."""
    if not base or not base.get("customizations"):
        return {}
    from ..config import ConfigError, expand_customizations

    try:
        labels = [label for label, _ in expand_customizations(base)]
    except (ConfigError, TypeError, ValueError, KeyError):
        return {}
    return dict(zip(labels, base["customizations"]))


def flatten(cfg, prefix=""):
    """``{"a.b.c": leaf}``; lists and empty mappings are leaves."""
    out = {}
    for key, value in cfg.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


_MISSING = object()


def _show(value):
    if value is _MISSING:
        return "(unset)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
    return str(value)


def variant_labels(variants, base):
    """Label per variant: ``key=value`` of each config entry its customization changed."""
    configs = [flatten(cfg) if cfg else None for _, _, cfg in variants]
    if base is not None:
        reference = flatten({k: v for k, v in base.items() if k != "customizations"})
        changed = [None if flat is None else sorted(k for k in set(flat) | set(reference)
                                                    if k != "customizations"
                                                    and flat.get(k, _MISSING) != reference.get(k, _MISSING))
                   for flat in configs]
    else:  # entries in which the variants disagree
        known = [flat for flat in configs if flat is not None]
        keys = set().union(*known) if known else set()
        varying = sorted(k for k in keys if len({repr(flat.get(k, _MISSING)) for flat in known}) > 1)
        changed = [None if flat is None else varying for flat in configs]
    entries = customization_entries(base)
    labels = []
    for (folder, _, _), flat, keys in zip(variants, configs, changed):
        entry = entries.get(folder)
        if entry is not None and (not keys or not isinstance(entry.get("value"), dict)):
            # a scalar customization, or one that repeats the base setting: name it as written
            labels.append(f"{'.'.join(map(str, entry['key']))}={_show(entry.get('value'))}")
        elif flat is None or not keys:
            labels.append(folder)
        else:
            labels.append(", ".join(f"{key}={_show(flat.get(key, _MISSING))}" for key in keys))
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    # two folders with the same changes stay apart
    return [f"{label} [{folder}]" if counts[label] > 1 else label
            for label, (folder, _, _) in zip(labels, variants)]


def summary_entries(variants, labels):
    """Summary dicts of :func:`..results.summarize` with ``variant`` and ``folder`` added."""
    entries = []
    for (folder, rows, _), label in zip(variants, labels):
        for entry in summarize([r for r in rows if r["method"] != DENSE_CONTROL]):  # loss against prune ratio
            entries.append({"variant": label, "folder": folder, **entry})
    return entries


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def method_series(entries, variant):
    """``{method: [entry, ...]}`` of one variant by prune ratio, its unpruned entry first in each."""
    mine = [e for e in entries if e["variant"] == variant]
    reference = [e for e in mine if e["method"] == REFERENCE]
    series = {}
    for entry in mine:
        if entry["method"] != REFERENCE:
            series.setdefault(entry["method"], []).append(entry)
    for method in series:
        series[method] = sorted(reference[:1] + series[method], key=lambda e: e["prune_ratio"])
    if not series and reference:
        series[REFERENCE] = reference[:1]
    return series


def _most_pruned_within_reference(entries):
    """Largest prune ratio whose mean loss is at most the unpruned mean loss (None if none)."""
    if not entries or entries[0]["method"] != REFERENCE or not _finite(entries[0]["test_loss_mean"]):
        return None
    limit = entries[0]["test_loss_mean"]
    ratios = [e["prune_ratio"] for e in entries[1:]
              if _finite(e["test_loss_mean"]) and e["test_loss_mean"] <= limit]
    return max(ratios) if ratios else None


def render_markdown(entries, labels, sweep_dir):
    datasets = ", ".join(dict.fromkeys(str(e["dataset"]) for e in entries))
    lines = [f"# Sweep: {os.path.basename(os.path.normpath(sweep_dir))} ({datasets})", "",
             f"{len(labels)} variants; test loss mean ± std over the converged runs (nets and repetitions) "
             "of each variant; prune ratio 0 % is the unpruned net.", "",
             "## Summary", ""]
    summary = []
    for label in labels:
        for method, series in method_series(entries, label).items():
            if method == REFERENCE:
                continue
            reference = series[0] if series[0]["method"] == REFERENCE else None
            finite = [e for e in series if _finite(e["test_loss_mean"])]
            best = min(finite, key=lambda e: e["test_loss_mean"]) if finite else None
            most = _most_pruned_within_reference(series)
            summary.append([
                label, method_label(method),
                format_mean_std(reference["test_loss_mean"], reference["test_loss_std"], count=reference["n_converged"])
                if reference else "–",
                f"{format_mean_std(best['test_loss_mean'], best['test_loss_std'], count=best['n_converged'])} "
                f"({percent(best['prune_ratio'])} %)" if best else "N/A",
                f"{percent(most)} %" if most is not None else "–",
            ])
    lines += markdown_table(["Variant", "Method", "Unpruned loss", "Best loss (prune ratio)",
                             "Most pruning at loss ≤ unpruned"], summary, align="llccc")
    lines += ["", "## All results", ""]
    body = []
    for label in labels:
        for entry in [e for e in entries if e["variant"] == label]:
            method = "unpruned" if entry["method"] == REFERENCE else method_label(entry["method"])
            loss = format_mean_std(entry["test_loss_mean"], entry["test_loss_std"], count=entry["n_converged"])
            body.append([label, method, percent(entry["prune_ratio"]), format_param_count(entry["params_mean"]),
                         loss, f"{entry['n_converged']}/{entry['n_total']}"])
    lines += markdown_table(["Variant", "Method", "Prune ratio (%)", "Parameters", "Test loss", "Converged"], body,
                            align="llcccc")
    return "\n".join(lines) + "\n"


def render_csv(entries):
    return table_csv([{**entry, "params": entry["params_mean"]} for entry in entries], CSV_COLUMNS)


def plot(entries, labels, path, title):
    """One panel per method, one line per variant (its unpruned net at 0 %), ±std bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(m for label in labels for m in method_series(entries, label)))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    columns = max(1, min(3, len(labels)))
    wrapped = {label: textwrap.fill(label, 48, break_on_hyphens=False) for label in labels}
    lines = sum(text.count("\n") + 1 for text in wrapped.values())
    legend_height = 0.3 + 0.16 * (math.ceil(lines / columns) + 1)  # inches below the panels
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4 + legend_height), sharey=True,
                             squeeze=False)
    try:
        for ax, method in zip(axes[0], methods):
            for i, label in enumerate(labels):
                series = [e for e in method_series(entries, label).get(method, []) if _finite(e["test_loss_mean"])]
                if not series:
                    continue
                x = [100 * e["prune_ratio"] for e in series]
                y = [e["test_loss_mean"] for e in series]
                std = [e["test_loss_std"] if _finite(e["test_loss_std"]) else 0.0 for e in series]
                color = cmap(i % cmap.N)
                ax.plot(x, y, marker="o", markersize=3, color=color, label=wrapped[label])
                ax.fill_between(x, [a - b for a, b in zip(y, std)], [a + b for a, b in zip(y, std)],
                                color=color, alpha=0.12)
            ax.set_title("unpruned" if method == REFERENCE else f"{method_label(method)} ({method})")
            ax.set_xlabel("Prune ratio (%)")
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("test loss")
        handles, names = axes[0][0].get_legend_handles_labels()
        for ax in axes[0][1:]:
            for handle, name in zip(*ax.get_legend_handles_labels()):
                if name not in names:
                    handles.append(handle)
                    names.append(name)
        fig.legend(handles, names, loc="lower center", ncol=columns, fontsize=7, frameon=False)
        fig.suptitle(title)
        fig.tight_layout(rect=(0, legend_height / (4 + legend_height), 1, 1))
        save_figure(fig, path)
    finally:
        plt.close(fig)


def run(args):
    variants = find_variants(args.sweep_dir)
    labels = variant_labels(variants, load_base_config(args.sweep_dir))
    entries = summary_entries(variants, labels)
    out = args.out or args.sweep_dir
    paths = [os.path.join(out, name) for name in ("sweep.md", "sweep.csv", "sweep.png")]
    save_text(render_markdown(entries, labels, args.sweep_dir), paths[0])
    save_text(render_csv(entries), paths[1])
    plot(entries, labels, paths[2], f"Sweep {os.path.basename(os.path.normpath(args.sweep_dir))}: "
                                    "test loss against prune ratio")
    print(f"{len(labels)} variants summarised in {', '.join(paths)}")
    return 0
