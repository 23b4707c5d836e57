"""``export RUN_DIR [--method FT --keep 0.2] [--out FILE.pt]``: a trained (pruned) flow of a run,
compacted, as a standalone file that samples and evaluates log-densities with only torch and
torchdiffeq (see :func:`torchprune_flows.export_flow` for the format and how to load it)."""
import os

from torchprune_flows.export import export_flow

from ..atomic_files import atomic_write
from ..runs import RunError, RunFolder
from .sample import add_step_arguments

HELP = "write a trained (pruned) flow of a run, compacted, as a standalone file (torch + torchdiffeq only)"


def add_arguments(parser):
    add_step_arguments(parser)
    parser.add_argument("--out", help="the file to write (default: RUN_DIR/export/<step>.pt)")


def run(args):
    run_ = RunFolder.open(args.run_dir)
    step = run_.select(args.method, args.keep, args.net, args.repetition)
    run_.require_converged(step, use="exported")
    net = run_.load_network(step)
    out = args.out or run_.export(step)
    if os.path.isdir(out):
        raise RunError(f"--out {out} is a folder; give the file to write")
    try:
        atomic_write(out, lambda handle: export_flow(net, handle))
    except NotImplementedError as err:
        raise RunError(f"cannot export {run_.cfg['network']['name']}: {err}") from err
    print(f"{step} (keep ratio {run_.steps[step]['keep_ratio']:.3f}) exported to {out}: load it with "
          "d = torch.load(path, weights_only=True); exec(d['loader'], ns); flow = ns['StandaloneFlow'](d)")
    return 0
