"""``--workers N`` / ``--ray-address ADDR``: the independent chains of a sweep as Ray tasks.

A sweep's steps form chains: per base net, the reference training; then one cascade chain per
(repetition, method), which depends only on that net's reference. Each chain runs as one Ray
task in its own worker process (one CPU, or one GPU with ``--device cuda``), on a local Ray
instance of N workers or on the cluster at ADDR, writing its steps into the same run folder
through the same atomic step files as the sequential runner (two chains never write the same
file). A task that dies (a worker killed) is retried by Ray and resumes from its last finished
step and epoch, as a rerun does; the driver writes ``results.csv`` and ``report.md`` at the end.
Ray is optional: ``pip install -e ".[ray]"``.
"""
import os
import sys

from tqdm import tqdm

INSTALL_HINT = "--workers needs Ray, which is not installed: pip install -e \".[ray]\" (or pip install ray)"


class ScaleOutError(Exception):
    """Ray is missing or cannot start; the message says what to do."""


def _ray():
    try:
        import ray
    except ImportError as err:
        raise ScaleOutError(INSTALL_HINT) from err
    return ray


def _experiment(run, out_dir, device, plugins):
    """The chain's own :class:`.pipeline.Experiment` in a worker process (one torch thread)."""
    import torch

    from torchprune_flows.registry import load_plugins

    from .pipeline import Experiment

    torch.set_num_threads(1)
    load_plugins(plugins)
    experiment = Experiment(run, out_dir, device)
    experiment._sweep_bar = tqdm(disable=True)
    return experiment


def reference_chain(run, out_dir, device, plugins, net_idx):
    """Train (or skip, when finished) base net ``net_idx``; returns its step name."""
    experiment = _experiment(run, out_dir, device, plugins)
    experiment.reference_step(net_idx)
    return experiment.folder.reference_step(net_idx)


def pruning_chain(run, out_dir, device, plugins, net_idx, rep, method, reference_step):
    """Walk the keep ratios of one (net, repetition, method), from the finished reference."""
    experiment = _experiment(run, out_dir, device, plugins)
    reference = experiment.folder.load_state(reference_step)
    experiment.prune_sweep(net_idx, rep, method, reference)
    return len(experiment.keep_ratios)


def chain_status(folder, steps):
    """``"<step> ep <epoch> loss <train loss> nfe <F>/<B>"`` of a chain's first unfinished step,
    from the per-epoch log its worker writes (what the driver shows while the chain runs)."""
    import json

    step = next((s for s in steps if not folder.is_finished(s)), None)
    if step is None:
        return None
    try:
        with open(folder.log(step)) as handle:
            last = json.loads(handle.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return f"{step} starting"
    return (f"{step} ep {last.get('epoch', 0) + 1} loss {last.get('train_loss', float('nan')):.3f} "
            f"nfe {last.get('nfe_forward', float('nan')):.0f}/{last.get('nfe_backward', float('nan')):.0f}")


def run_on_ray(experiment, run, workers, address=None, plugins=()):
    """Run ``experiment``'s sweep as Ray tasks; returns the result rows (as ``run()`` does)."""
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        except Exception as err:  # noqa: BLE001  (Ray reports start-up problems in many ways)
            raise ScaleOutError(f"cannot start Ray ({type(err).__name__}: {str(err).splitlines()[0]})") from err
    gpu = 1 if experiment.device.type == "cuda" else 0
    options = dict(num_cpus=1, num_gpus=gpu, max_retries=3, retry_exceptions=False)
    reference_task = ray.remote(reference_chain).options(**options)
    pruning_task = ray.remote(pruning_chain).options(**options)
    device = str(experiment.device)
    exp = experiment.cfg["experiments"]
    pending, steps = {}, {}  # task -> number of its steps; task -> its step names
    folder = experiment.folder
    try:
        for net_idx in range(exp["numNets"]):
            reference = reference_task.remote(run, experiment.out_dir, device, list(plugins), net_idx)
            pending[reference], steps[reference] = 1, [folder.reference_step(net_idx)]
            if experiment.mode == "train":
                continue
            for rep in range(exp["numRepetitions"]):
                for method in experiment.methods:
                    chain = pruning_task.remote(run, experiment.out_dir, device, list(plugins), net_idx, rep, method,
                                                reference)
                    pending[chain] = len(experiment.keep_ratios)
                    steps[chain] = [folder.pruned_step(net_idx, rep, method, i)
                                    for i in range(len(experiment.keep_ratios))]
        total = sum(pending.values())
        with tqdm(total=total, desc="steps", unit="step", dynamic_ncols=True, file=sys.stderr) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                if done:
                    ray.get(done[0])  # raises the chain's error, if any
                    bar.update(pending.pop(done[0]))
                running = [chain_status(folder, steps[task]) for task in pending]
                bar.set_postfix_str(" | ".join(r for r in running if r)[:200])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    return experiment.write_outputs()


__all__ = ["INSTALL_HINT", "ScaleOutError", "pruning_chain", "reference_chain", "run_on_ray"]
