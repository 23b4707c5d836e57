"""What the run analyses share: selecting steps of a finished run, labelling them."""
from torchprune_flows.errors import check_keep_ratio
from torchprune_flows.pruning import PruningError, canonical_method, pruning_method

from ..results import DENSE_CONTROL, REFERENCE, format_percent
from ..runs import RunError


def add_selection_arguments(parser, methods_default, keep_default):
    """``--nets``, ``--methods``, ``--keep``, ``--repetition`` shared by the run analyses."""
    methods_help = "pruning methods (names or aliases WT, FT); default: " + (
        " ".join(methods_default) if methods_default else "every method of the run")
    keep_help = "keep ratios (finished ones, each within 0.5 %% or 5e-4); default: " + (
        " ".join(map(str, keep_default)) + " (the closest finished one)" if keep_default else "every finished one")
    parser.add_argument("--nets", type=int, nargs="+", default=[0], help="trained nets (default: 0)")
    parser.add_argument("--methods", nargs="+", default=methods_default, help=methods_help)
    parser.add_argument("--keep", type=float, nargs="+", default=None, help=keep_help)
    parser.set_defaults(default_keep=keep_default)
    parser.add_argument("--repetition", type=int, default=0, help="pruning repetition (default 0)")


def selected_keeps(args):
    """``(keep ratios, closest)``: the typed ``--keep`` values (matched exactly), else the
    subcommand's default (the closest finished ratio) or None (every finished one)."""
    if args.keep is not None:
        return args.keep, False
    return getattr(args, "default_keep", None), True


def run_methods(run):
    """Pruning methods with finished steps, in the order of the run config's ``methods`` (then any
    others); the dense control is no pruning method."""
    methods = [m for m in dict.fromkeys(r["method"] for r in run.steps.values()) if m not in (REFERENCE, DENSE_CONTROL)]
    order = [canonical_method(m) for m in run.cfg["experiments"]["methods"]]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


def select_steps(run, nets, methods=None, keeps=None, repetition=0, reference=True, closest=False):
    """Step names: per net the unpruned net, then per method each keep ratio (a finished one:
    :meth:`..runs.RunFolder.select`; ``closest``: the nearest finished one, for defaults).

    ``methods`` None: every method of the run; ``keeps`` None: every finished keep ratio,
    largest first; ``reference`` False leaves out the unpruned nets. Duplicates appear once.
    """
    methods = run_methods(run) if methods is None else list(dict.fromkeys(canonical_method(m) for m in methods))
    for keep in keeps or []:
        check_keep_ratio(keep, name="--keep", error=RunError)
    steps = []
    for net in nets:
        if reference:
            steps.append(run.select(None, None, net))
        for method in methods:
            if keeps is None:
                run.select(method, 1.0, net, repetition, closest=True)  # RunError when the method has no finished step
                found = [s for s, r in run.steps.items()
                         if r["method"] == method and r["net"] == net and r["repetition"] == repetition]
                steps += sorted(found, key=lambda s: -run.steps[s]["keep_ratio"])
            else:
                steps += [run.select(method, keep, net, repetition, closest=closest) for keep in keeps]
    if not steps:
        raise RunError(f"nothing selected in {run.run_dir}: no finished pruned step (and the unpruned net left out)")
    return list(dict.fromkeys(steps))


def method_label(method):
    """Short name of a method: its alias (WT, FT) when it has one."""
    try:
        return pruning_method(method).label
    except PruningError:  # a method of a plugin this process did not load
        return method


def prune_ratio(row):
    value = row.get("prune_ratio")
    return float(value) if value is not None else 1.0 - float(row["keep_ratio"])


def percent(ratio):
    """A ratio as a percentage with one decimal at most (the analyses' tables and plots)."""
    return format_percent(ratio, decimals=1)


def step_label(row):
    """``unpruned`` or ``WT, prune 70 %``."""
    if row["method"] == REFERENCE:
        return "unpruned"
    return f"{method_label(row['method'])}, prune {percent(prune_ratio(row))} %"


def load_test_split(run):
    """The run's test split (built as the run built it)."""
    from ..data import build_split

    return build_split(run.cfg, "test")


def load_density_net(run, step, device):
    net = run.load_network(step, device)
    if not (hasattr(net, "sample") and hasattr(net, "log_prob")):
        raise RunError(f"{run.cfg['network']['name']} is not a density model (no sample / log_prob)")
    return net


def check_positive(value, option):
    if value < 1:
        raise RunError(f"{option} must be positive, got {value}")
