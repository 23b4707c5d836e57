"""``modes RUN_DIR``: mode coverage of samples against the toy mixture, per prune ratio.

For each selected net (default: the unpruned net and every finished keep ratio of every method
of net 0) draws samples, assigns each to its nearest true mode (distance in that mode's
standard deviations) and reports the share of samples near a mode, the share between modes and
the number of modes captured (see :mod:`torchprune_flows.analysis.modes`). Writes
``modes.csv``, ``modes.md`` and ``modes.png`` into ``--out`` (default ``RUN_DIR/analysis/``).
"""
import math
import os

import numpy as np

from ..atomic_files import save_text
from ..render import save_figure
from ..results import REFERENCE, markdown_table, table_csv
from ..runs import RunError, RunFolder
from .common import (add_selection_arguments, check_positive, load_density_net, load_test_split, method_label,
                     percent, prune_ratio, select_steps, selected_keeps)

HELP = "mode coverage of samples (share near the true modes, modes captured) against prune ratio"

COLUMNS = [
    "step", "net", "repetition", "method", "keep_ratio", "prune_ratio", "test_loss", "num_samples",
    "radius", "share_near_modes", "expected_share_near_modes", "share_between_modes", "share_outside",
    "modes_captured", "num_modes", "per_mode_counts", "error",
]


def add_arguments(parser):
    parser.add_argument("run_dir", help="output folder of a run (its config.yaml, steps/, checkpoints/)")
    add_selection_arguments(parser, methods_default=None, keep_default=None)
    parser.add_argument("-n", "--num-samples", type=int, default=5000, help="samples per net (default 5000)")
    parser.add_argument("--batch", type=int, default=5000, help="samples integrated at once")
    parser.add_argument("--radius", type=float, default=2.0,
                        help="a sample is near a mode within this many of the mode's stds (default 2)")
    parser.add_argument("--min-share", type=float, default=None,
                        help="share of all samples a mode needs near it to count as captured "
                             "(default: 20%% of 1/K for K modes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior draws (same for every net)")
    parser.add_argument("--out", help="output folder (default RUN_DIR/analysis/)")
    parser.add_argument("--device", default="cpu")


def mixture_of(run, data):
    """``(centers, stds)`` of the test dataset's generating mixture, or RunError."""
    if not hasattr(data, "mixture_components"):
        name = run.cfg["experiments"].get("datasetTest") or run.cfg["network"]["dataset"]
        raise RunError(f"dataset {name} has no known mixture components; mode coverage needs a "
                       "Gaussian-mixture toy such as ToyGaussians or ToyGaussiansSpiral")
    centers, stds = data.mixture_components()
    return np.asarray(centers, dtype=np.float64), np.asarray(stds, dtype=np.float64)


def run(args):
    from torchprune_flows.analysis.modes import mode_coverage
    from torchprune_flows.cnf import SolverError

    from .sample import draw_samples

    check_positive(args.num_samples, "--num-samples")
    check_positive(args.batch, "--batch")
    if not args.radius > 0:
        raise RunError(f"--radius must be positive, got {args.radius:g}")
    if args.min_share is not None and not 0.0 <= args.min_share <= 1.0:
        raise RunError(f"--min-share must lie in [0, 1], got {args.min_share:g}")
    run_ = RunFolder.open(args.run_dir)
    keeps, closest = selected_keeps(args)
    steps = select_steps(run_, args.nets, args.methods, keeps, args.repetition, closest=closest)
    centers, stds = mixture_of(run_, load_test_split(run_))
    rows = []
    for step in steps:
        record = run_.steps[step]
        net = load_density_net(run_, step, args.device)
        row = {"step": step, "net": record["net"], "repetition": record.get("repetition", 0),
               "method": record["method"], "keep_ratio": float(record["keep_ratio"]),
               "prune_ratio": prune_ratio(record), "test_loss": record.get("test_loss"),
               "num_samples": args.num_samples, "radius": args.radius, "num_modes": len(centers), "error": ""}
        try:
            samples = draw_samples(net, args.num_samples, args.batch, args.seed)
        except SolverError as err:  # a diverged net: recorded, the other nets still count
            row.update(error=" ".join(str(err).split()))
            rows.append(row)
            continue
        cov = mode_coverage(samples, centers, stds, radius=args.radius, min_share=args.min_share)
        row.update({key: cov[key] for key in ("share_near_modes", "expected_share_near_modes",
                                              "share_between_modes", "share_outside", "modes_captured")})
        row["per_mode_counts"] = ";".join(str(int(c)) for c in cov["per_mode_counts"])
        rows.append(row)
        print(f"{step}: {percent(row['share_near_modes'])} % near modes, "
              f"{row['modes_captured']}/{len(centers)} modes captured")
    out = args.out or run_.analysis_dir
    paths = [os.path.join(out, name) for name in ("modes.csv", "modes.md", "modes.png")]
    save_text(_csv_text(rows), paths[0])
    save_text(_markdown(rows, run_, args, len(centers)), paths[1])
    _plot(rows, paths[2], run_, len(centers))
    print(f"mode coverage of {len(rows)} nets in {', '.join(paths)}")
    return 0


def _csv_text(rows):
    return table_csv(rows, COLUMNS)


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "N/A"
    return format(value, spec)


def _markdown(rows, run_, args, num_modes):
    from torchprune_flows.analysis.modes import gaussian_mass_within

    expected = gaussian_mass_within(args.radius, 2)
    min_share = args.min_share if args.min_share is not None else 0.2 / num_modes
    lines = [
        f"# Mode coverage: {run_.cfg['network']['dataset']} ({run_.cfg['network']['name']})", "",
        f"{args.num_samples} samples per net (seed {args.seed}). A sample is *near* a mode within "
        f"{args.radius:g} of that mode's standard deviations (its nearest mode, distance in stds); "
        f"samples of the true mixture give {100 * expected:.1f} % near modes. A mode is *captured* "
        f"with at least {100 * min_share:.2f} % of all samples near it; {num_modes} modes. *Between "
        "modes*: near no mode but inside the mixture's extent.", "",
    ]
    body = []
    for row in rows:
        if row["error"]:
            cells = ["failed"] * 3
        else:
            cells = [_fmt(100 * row["share_near_modes"], ".1f"), _fmt(100 * row["share_between_modes"], ".1f"),
                     f"{row['modes_captured']} / {num_modes}"]
        model = "unpruned" if row["method"] == REFERENCE else method_label(row["method"])
        body.append([str(row["net"]), model, percent(row["prune_ratio"]), _fmt(row["test_loss"], ".3f"), *cells])
    lines += markdown_table(["Net", "Model", "Prune ratio (%)", "Test NLL", "Near modes (%)", "Between modes (%)",
                             "Modes captured"], body, align="llccccc")
    failed = [row for row in rows if row["error"]]
    if failed:
        lines += [""] + [f"- {row['step']}: sampling failed ({row['error']})" for row in failed]
    return "\n".join(lines) + "\n"


def _series(rows):
    """``{(method, net): [(prune %, row), ...]}``, the net's unpruned row at 0 % of every method."""
    series = {}
    references = {row["net"]: row for row in rows if row["method"] == REFERENCE and not row["error"]}
    for row in rows:
        if row["method"] == REFERENCE or row["error"]:
            continue
        series.setdefault((row["method"], row["net"]), []).append(row)
    for (_method, net), entries in series.items():
        if net in references:
            entries.append(references[net])
        entries.sort(key=lambda r: r["prune_ratio"])
    if not series:  # only unpruned nets
        series = {(REFERENCE, net): [row] for net, row in references.items()}
    return series


def _plot(rows, path, run_, num_modes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchprune_flows.analysis.modes import gaussian_mass_within

    radius = rows[0]["radius"]
    fig, (near_ax, modes_ax) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        nets = {row["net"] for row in rows}
        for (method, net), entries in _series(rows).items():
            label = method_label(method) + (f" net {net}" if len(nets) > 1 else "")
            x = [100 * r["prune_ratio"] for r in entries]
            near_ax.plot(x, [100 * r["share_near_modes"] for r in entries], marker="o", label=label)
            modes_ax.plot(x, [r["modes_captured"] for r in entries], marker="o", label=label)
        near_ax.axhline(100 * gaussian_mass_within(radius, 2), color="black", linestyle="--",
                        label="true mixture")
        modes_ax.axhline(num_modes, color="black", linestyle="--", label="all modes")
        near_ax.set_ylabel(f"samples within {radius:g} std of a mode (%)")
        modes_ax.set_ylabel("modes captured")
        modes_ax.set_ylim(-0.3, num_modes + 0.5)
        for ax in (near_ax, modes_ax):
            ax.set_xlabel("Prune ratio (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"Mode coverage: {run_.cfg['network']['dataset']} ({run_.cfg['network']['name']})")
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)
