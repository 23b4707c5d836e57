"""``figure RUN_DIR``: the paper's Figure S1 for a 2-D flow, as one PNG grid.

One row per model: the unpruned net, then each chosen method x keep ratio (default FT and WT at
keep 0.3). Columns: (a) the learned density ``exp(log p(x))`` on a ``--grid`` x ``--grid`` grid
over the test data's range (plus a margin), (b) samples over the test data (faint), (c) the
vector field as streamlines over the same range. The field is drawn in the *sampling*
direction, ``-f(x, t)`` at ``t = --field-time`` x T (default 0, the data end of the flow, where
samples arrive): arrows show where the flow pushes samples, so a field that pulls them into the
space between modes (the unpruned nets of Figure S1) is visible as streamlines converging there.
Only the first CNF block is drawn (the toy flows have one). The density uses the net's solver
as is, with the exact divergence (2 vector-Jacobian products in 2-D, deterministic) unless
``--divergence as-trained`` keeps the net's own estimator (seeded by ``--seed``).
"""
import math
import os

import numpy as np
import torch

from ..render import save_figure
from ..results import REFERENCE
from ..runs import RunError, RunFolder
from .common import (add_selection_arguments, check_positive, load_density_net, load_test_split, method_label,
                     select_steps, selected_keeps, step_label)

HELP = "Figure S1 for a 2-D flow: learned density, samples and vector field of unpruned and pruned nets"


def add_arguments(parser):
    parser.add_argument("run_dir", help="output folder of a run (its config.yaml, steps/, checkpoints/)")
    add_selection_arguments(parser, methods_default=["FT", "WT"], keep_default=[0.3])
    parser.add_argument("--grid", type=int, default=200, help="density grid points per axis (default 200)")
    parser.add_argument("--field-grid", type=int, default=40,
                        help="vector-field grid points per axis for the streamlines (default 40)")
    parser.add_argument("--field-time", type=float, default=0.0,
                        help="time of the drawn vector field as a fraction of the end time T (default 0)")
    parser.add_argument("--stream-density", type=float, default=1.0,
                        help="density of the streamlines (matplotlib streamplot's density, default 1)")
    parser.add_argument("--margin", type=float, default=0.1,
                        help="margin around the test data's range, as a fraction of its span (default 0.1)")
    parser.add_argument("--divergence", choices=["exact", "as-trained"], default="exact",
                        help="divergence of the density evaluation (default exact)")
    parser.add_argument("-n", "--num-samples", type=int, default=5000, help="samples per net (default 5000)")
    parser.add_argument("--batch", type=int, default=5000, help="grid points / samples integrated at once")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior draws (same for every net)")
    parser.add_argument("--out", help="PNG file (default RUN_DIR/analysis/figure_s1.png)")
    parser.add_argument("--device", default="cpu")


def data_points(data, limit=20000):
    """Up to ``limit`` test points as an (N, D) numpy array (with the run's test transforms)."""
    count = min(limit, len(data))
    if count == 0:
        raise RunError("the run's test split is empty")
    points = torch.stack([torch.as_tensor(data[i][0]) for i in range(count)])
    return points.reshape(count, -1).double().numpy()


def plot_range(points, margin):
    """``(lo, hi)`` per coordinate: the points' range widened by ``margin`` of its span."""
    finite = points[np.isfinite(points).all(axis=1)]
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    span = np.maximum(hi - lo, 1e-6)
    return lo - margin * span, hi + margin * span


def _compute_row(run_, step, args, xs, ys, fxs, fys, mixture):
    from torchprune_flows.analysis.grid import density_on_grid, field_on_grid
    from torchprune_flows.analysis.modes import mode_coverage
    from torchprune_flows.cnf import SolverError

    from .sample import draw_samples

    net = load_density_net(run_, step, args.device)
    divergence = "exact" if args.divergence == "exact" else None
    row = {"step": step, "record": run_.steps[step]}
    try:
        row["density"] = density_on_grid(net, xs, ys, args.batch, divergence, args.seed)
    except SolverError as err:
        row["density_error"] = " ".join(str(err).split())
    try:
        row["samples"] = draw_samples(net, args.num_samples, args.batch, args.seed)
    except SolverError as err:
        row["samples_error"] = " ".join(str(err).split())
    if mixture is not None and "samples" in row:
        row["coverage"] = mode_coverage(row["samples"], *mixture)
    row["field"] = field_on_grid(net, fxs, fys, args.field_time)
    return row


def _row_label(record):
    loss = record.get("test_loss")
    nll = f"test NLL {loss:.3f}" if isinstance(loss, (int, float)) and math.isfinite(loss) else "test NLL N/A"
    return f"{step_label(record)}\n{nll}"


def _message(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, wrap=True)


def _draw(rows, points, lo, hi, xs, ys, fxs, fys, mixture, args, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extent = (lo[0], hi[0], lo[1], hi[1])
    fig, axes = plt.subplots(len(rows), 3, figsize=(10.5, 3.3 * len(rows)), squeeze=False)
    try:
        blocks = next((r["field"][2] for r in rows if r["field"] is not None), 1)
        field_title = f"vector field −f(x, t={args.field_time:g}·T), sampling direction"
        if blocks > 1:
            field_title += f" (block 1 of {blocks})"
        titles = ["learned density exp(log p(x))", f"samples (n={args.num_samples}) over test data", field_title]
        for ax, text in zip(axes[0], titles):
            ax.set_title(text, fontsize=9)
        for ax_row, row in zip(axes, rows):
            density_ax, samples_ax, field_ax = ax_row
            if "density" in row:
                density_ax.imshow(row["density"], origin="lower", extent=extent, cmap="viridis", aspect="auto")
            else:
                _message(density_ax, "density failed:\n" + row["density_error"])
            samples_ax.scatter(points[:, 0], points[:, 1], s=2, color="0.45", alpha=0.25, linewidths=0)
            if "samples" in row:
                samples_ax.scatter(row["samples"][:, 0], row["samples"][:, 1], s=1.5, color="C0", alpha=0.5,
                                   linewidths=0)
            else:
                _message(samples_ax, "sampling failed:\n" + row["samples_error"])
            if "coverage" in row:
                cov = row["coverage"]
                samples_ax.text(0.02, 0.02, f"{100 * cov['share_near_modes']:.0f} % near modes, "
                                f"{cov['modes_captured']}/{cov['num_modes']} modes",
                                transform=samples_ax.transAxes, fontsize=7,
                                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0})
            if row["field"] is None:
                _message(field_ax, "no CNF block to draw")
            else:
                u, v, _ = row["field"]
                speed = np.hypot(u, v)
                if np.isfinite(speed).all() and speed.max() > 0:
                    field_ax.streamplot(fxs, fys, u, v, color=speed, cmap="magma_r", density=args.stream_density,
                                        linewidth=0.8, arrowsize=0.8)
                else:
                    _message(field_ax, "vector field is zero or not finite")
            if mixture is not None:
                for ax in (samples_ax, field_ax):
                    ax.scatter(mixture[0][:, 0], mixture[0][:, 1], marker="x", s=18, color="red", linewidths=1)
            for ax in ax_row:
                ax.set_xlim(lo[0], hi[0])
                ax.set_ylim(lo[1], hi[1])
                ax.tick_params(labelsize=7)
            density_ax.set_ylabel(_row_label(row["record"]), fontsize=9)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def run(args):
    check_positive(args.num_samples, "--num-samples")
    check_positive(args.batch, "--batch")
    if args.grid < 2 or args.field_grid < 2:
        raise RunError(f"--grid and --field-grid need at least 2 points per axis, got {args.grid}, {args.field_grid}")
    if not 0.0 <= args.field_time <= 1.0:
        raise RunError(f"--field-time is a fraction of the end time in [0, 1], got {args.field_time:g}")
    if not args.stream_density > 0:
        raise RunError(f"--stream-density must be positive, got {args.stream_density:g}")
    if not args.margin >= 0:
        raise RunError(f"--margin must be non-negative, got {args.margin:g}")
    run_ = RunFolder.open(args.run_dir)
    data = load_test_split(run_)
    points = data_points(data)
    if points.shape[1] != 2:
        raise RunError(f"Figure S1 needs 2-D data; {run_.cfg['network']['dataset']} has {points.shape[1]} "
                       "dimensions per sample")
    keeps, closest = selected_keeps(args)
    steps = select_steps(run_, args.nets, args.methods, keeps, args.repetition, closest=closest)
    mixture = data.mixture_components() if hasattr(data, "mixture_components") else None
    lo, hi = plot_range(points, args.margin)
    xs, ys = np.linspace(lo[0], hi[0], args.grid), np.linspace(lo[1], hi[1], args.grid)
    fxs, fys = np.linspace(lo[0], hi[0], args.field_grid), np.linspace(lo[1], hi[1], args.field_grid)
    rows = []
    for step in steps:
        rows.append(_compute_row(run_, step, args, xs, ys, fxs, fys, mixture))
        print(f"{step}: done")
    path = args.out or os.path.join(run_.analysis_dir, "figure_s1.png")
    models = ", ".join(dict.fromkeys(
        "unpruned" if r["record"]["method"] == REFERENCE else method_label(r["record"]["method"]) for r in rows))
    title = f"{run_.cfg['network']['dataset']} ({run_.cfg['network']['name']}): {models}"
    _draw(rows, points, lo, hi, xs, ys, fxs, fys, mixture, args, title, path)
    print(f"Figure S1 of {len(rows)} nets in {path}")
    return 0
