"""``hessian RUN_DIR``: loss-surface Hessian of the unpruned and pruned nets (supplement S6).

For every selected step of a finished run: the largest eigenvalue λmax (Lanczos), the trace
(Hutchinson) and the condition number κ (largest over smallest positive Ritz value of stochastic
Lanczos quadrature) of the Hessian of the run's training loss with respect to the parameters
the pruning kept, on a fixed subset of the training split (its first ``--samples`` points), with
backprop through the ODE solver and the flow's Hutchinson probes fixed by ``--seed``. Writes
``hessian.csv`` and ``hessian.md`` (a table like S11-S12) into ``--out`` and prints the table.
"""
import math
import os

import torch
from tqdm import tqdm

from torchprune_flows.analysis.hessian import hessian_summary, positive_threshold
from torchprune_flows.cnf.cnf import set_solver
from torchprune_flows.cnf.solver import SolverError
from torchprune_flows.pruning import canonical_method

from ..atomic_files import save_text
from ..results import REFERENCE, markdown_table, table_csv
from ..runs import RunError, RunFolder
from .common import add_selection_arguments, method_label, run_methods, select_steps, selected_keeps

HELP = "Hessian of the training loss w.r.t. the kept parameters: λmax, trace, κ (tables S11-S12)"

COLUMNS = ["model", "method", "net", "keep_ratio", "prune_ratio", "test_nll", "nll_subset", "lambda_max",
           "trace", "trace_stderr", "condition_number", "kept_parameters", "step"]


def add_arguments(parser):
    parser.add_argument("run_dir", help="output folder of a run (its config.yaml, steps/, checkpoints/)")
    add_selection_arguments(parser, methods_default=None, keep_default=None)
    parser.add_argument("--no-reference", action="store_true", help="skip the unpruned base net")
    parser.add_argument("--samples", type=int, default=1000,
                        help="size of the fixed training subset: the first N points of the training split")
    parser.add_argument("--probes", type=int, default=100, help="Hutchinson probes for the trace")
    parser.add_argument("--slq-probes", type=int, default=4, help="stochastic Lanczos quadrature probes for κ")
    parser.add_argument("--iters", type=int, default=50,
                        help="Lanczos steps for λmax and per SLQ probe (capped at the kept parameter count)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the flow's probes and every random vector")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="precision of the Hessian-vector products (default float64: κ needs it)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/analysis/)")


def _check(args):
    for name in ("samples", "probes", "slq_probes", "iters"):
        if getattr(args, name) < 1:
            raise RunError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def training_subset(cfg, samples, device, dtype):
    """The first ``samples`` points of the training split (inputs cast to ``dtype``) and targets."""
    from ..data import build_split

    data = build_split(cfg, "train")
    items = [data[i] for i in range(min(samples, len(data)))]
    if not items:
        raise RunError("the training split is empty")
    x = torch.stack([torch.as_tensor(item[0]) for item in items]).to(device=device, dtype=dtype)
    y = torch.as_tensor([item[1] for item in items]).to(device)
    return x, y


def analyse_step(run, step, loss_fn, x, y, args, dtype):
    net = run.load_network(step, args.device).to(dtype)
    set_solver(net, adjoint=False)  # the adjoint gives no second derivatives
    row = run.steps[step]
    keep = float(row["keep_ratio"])
    out = dict(model=run.cfg["network"]["name"], method=row["method"], net=row["net"], keep_ratio=keep,
               prune_ratio=1.0 - keep, test_nll=row.get("test_loss", math.nan), step=step)
    try:
        summary = hessian_summary(net, lambda: loss_fn(net(x), y), probes=args.probes, iters=args.iters,
                                  seed=args.seed, slq_probes=args.slq_probes)
    except SolverError as err:
        tqdm.write(f"[{step}] the ODE solve failed ({err}); its Hessian row is NaN")
        summary = dict(loss=math.nan, lambda_max=math.nan, trace=math.nan, trace_stderr=math.nan,
                       condition_number=math.nan, dim=math.nan)
    out.update(nll_subset=summary["loss"], lambda_max=summary["lambda_max"], trace=summary["trace"],
               trace_stderr=summary["trace_stderr"], condition_number=summary["condition_number"],
               kept_parameters=summary["dim"])
    return out


def _sort_key(methods):
    order = {m: i for i, m in enumerate([REFERENCE] + methods)}
    return lambda r: (order.get(r["method"], len(order)), r["prune_ratio"], r["net"])


def _number(value, digits=4):
    if value is None or not math.isfinite(value):
        return "N/A"
    return f"{value:.{digits}g}"


def _kappa(value):
    if value is None or not math.isfinite(value):
        return "N/A"
    return f"{value / 1000:.2f}k" if abs(value) >= 1000 else f"{value:.3g}"


def render_markdown(rows, title, note, several_nets):
    body = []
    for r in rows:
        label = "Unpruned" if r["method"] == REFERENCE else f"Sparse {method_label(r['method'])}"
        model = f"{label} {r['model']}" + (f" (net {r['net']})" if several_nets else "")
        body.append([model, f"{100 * r['prune_ratio']:.0f}%", _number(r["test_nll"]), _number(r["lambda_max"]),
                     _number(r["trace"]), _kappa(r["condition_number"])])
    table = markdown_table(["Model", "Prune ratio", "NLL", "λmax(H)", "tr(H)", "κ(H)"], body, align="lrrrrr")
    return "\n".join([f"# {title}", ""] + table + ["", note, ""])


def render_csv(rows):
    return table_csv([{k: r[k] for k in COLUMNS} for r in rows], COLUMNS)


def run(args):
    _check(args)
    finished = RunFolder.open(args.run_dir)
    keeps, closest = selected_keeps(args)
    steps = select_steps(finished, args.nets, args.methods, keeps, args.repetition,
                         reference=not args.no_reference, closest=closest)
    from ..pipeline import build_loss

    dtype = getattr(torch, args.dtype)
    loss_fn = build_loss(finished.cfg)
    x, y = training_subset(finished.cfg, args.samples, args.device, dtype)
    rows = [analyse_step(finished, step, loss_fn, x, y, args, dtype)
            for step in tqdm(steps, desc="hessian", unit="net", dynamic_ncols=True)]
    methods = [canonical_method(m) for m in args.methods] if args.methods else run_methods(finished)
    rows.sort(key=_sort_key(methods))

    out_dir = args.out or finished.analysis_dir
    cfg = finished.cfg
    title = f"Hessian analysis: {cfg['network']['name']} on {cfg['network']['dataset']}"
    note = (f"Hessian of the training loss ({cfg['training']['loss']}) w.r.t. the kept parameters on the first "
            f"{len(x)} training points ({args.dtype}, backprop through the solver, seed {args.seed}). "
            f"NLL: test loss of the step. λmax: Lanczos (≤ {args.iters} steps); tr: Hutchinson "
            f"({args.probes} Rademacher probes); κ: largest over smallest positive Ritz value "
            f"(> {positive_threshold(dtype):g}·max) of SLQ ({args.slq_probes} × {args.iters} Lanczos steps).")
    markdown = render_markdown(rows, title, note, len(set(r["net"] for r in rows)) > 1)
    save_text(render_csv(rows), os.path.join(out_dir, "hessian.csv"))
    save_text(markdown, os.path.join(out_dir, "hessian.md"))
    print(markdown)
    print(f"written: {os.path.join(out_dir, 'hessian.csv')}, {os.path.join(out_dir, 'hessian.md')}")
    return 0
