"""``sample RUN_DIR [--method FT --keep 0.3] [-n N] [--out FILE.npy] [--plot FILE.png]`` (also
``python -m experiment.sample RUN_DIR ...``).

Draws samples from a trained flow of a finished run (base net by default, or the pruned net of
``--method`` at ``--keep``) by integrating the flow backwards from the prior. Samples are
in the space the model was trained on (the dataset's normalised coordinates).
"""
import argparse
import sys

import numpy as np
import torch

from torchprune_flows.cnf import SolverError
from torchprune_flows.errors import reports_user_errors

from ..atomic_files import atomic_write
from ..render import save_figure
from ..runs import RunError, RunFolder


HELP = ("draw samples from a trained flow of a run (the base net, or the pruned net of --method at "
        "--keep) by integrating it backwards from the prior")


def add_step_arguments(parser):
    """RUN_DIR and the selection of one trained net: ``--method``, ``--keep``, ``--net``, ``--repetition``."""
    parser.add_argument("run_dir", help="output folder of a run (its config.yaml, steps/, checkpoints/)")
    parser.add_argument("--method", help="ThresNet/WT or FilterThresNet/FT (default: the unpruned base net)")
    parser.add_argument("--keep", type=float, help="keep ratio of the pruned net (a finished one, within 0.5 %% or 5e-4)")
    parser.add_argument("--net", type=int, default=0)
    parser.add_argument("--repetition", type=int, default=0)


def add_arguments(parser):
    add_step_arguments(parser)
    parser.add_argument("-n", "--num-samples", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=5000, help="samples integrated at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="samples as .npy (default: RUN_DIR/samples/<step>.npy)")
    parser.add_argument("--plot", help="also draw the first two coordinates against the test data as PNG")
    parser.add_argument("--device", default="cpu")


def draw_samples(net, num_samples, batch=5000, seed=0):
    """``num_samples`` samples of ``net`` as a numpy array, reproducible for a seed."""
    generator = torch.Generator().manual_seed(seed)
    chunks = [net.sample(min(batch, num_samples - start), generator=generator).cpu()
              for start in range(0, num_samples, batch)]
    return torch.cat(chunks).reshape(num_samples, -1).numpy()


def plot_samples(samples, reference, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, points, label in zip(axes, (reference, samples), ("test data", "samples")):
        if points is not None:
            ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.3)
        ax.set_title(label)
        ax.set_xlabel("x0")
    axes[0].set_ylabel("x1")
    fig.suptitle(title)
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


def run(args):
    if args.num_samples < 1:
        raise RunError(f"--num-samples must be positive, got {args.num_samples}")
    run_ = RunFolder.open(args.run_dir)
    step = run_.select(args.method, args.keep, args.net, args.repetition)
    run_.require_converged(step)
    net = run_.load_network(step, args.device)
    if not hasattr(net, "sample"):
        raise RunError(f"{run_.cfg['network']['name']} is not a density model and cannot be sampled")
    try:
        samples = draw_samples(net, args.num_samples, args.batch, args.seed)
    except SolverError as err:
        raise RunError(f"sampling {step} failed: the reverse solve did not converge ({err})") from err
    out = args.out or run_.samples(step)
    atomic_write(out, lambda handle: np.save(handle, samples))
    print(f"{len(samples)} samples of {step} (keep ratio {run_.steps[step]['keep_ratio']:.3f}) in {out}")
    if args.plot:
        reference = _test_points(run_.cfg, len(samples))
        plot_samples(samples, reference, args.plot, f"{run_.cfg['network']['dataset']}: {step}")
        print(f"plot in {args.plot}")
    return 0


@reports_user_errors
def main(argv=None):
    """``python -m experiment.sample ARGS``: the ``sample`` subcommand on its own."""
    from . import add_common_arguments, run_subcommand

    parser = argparse.ArgumentParser(prog="python -m experiment.sample", description=HELP)
    add_common_arguments(sys.modules[__name__], parser)
    return run_subcommand(sys.modules[__name__], parser.parse_args(sys.argv[1:] if argv is None else argv))


def _test_points(cfg, limit):
    """Up to ``limit`` test points of the run's dataset, or None when its files are unavailable."""
    from ..data import build_split

    try:
        data = build_split(cfg, "test")
    except FileNotFoundError:
        return None
    points = torch.stack([data[i][0] for i in range(min(limit, len(data)))])
    return points.reshape(len(points), -1).numpy()

