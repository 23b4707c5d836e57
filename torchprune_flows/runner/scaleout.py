"""``--workers N`` / ``--ray-address ADDR``: the independent chains of a sweep as Ray tasks.

A sweep's steps form chains: per base net, the reference training; then one cascade chain per
(repetition, method), and with ``experiments.control: dense`` one dense-control chain per
repetition, each of which depends only on that net's reference. Each chain runs as one Ray
task in its own worker process (one CPU, or one GPU with ``--device cuda``), on a local Ray
instance of N workers or on the cluster at ADDR, writing its steps into the same run folder
through the same atomic step files as the sequential runner (two chains never write the same
file). A task that dies (a worker killed) is retried by Ray and resumes from its last finished
step and epoch, as a rerun does; the driver writes ``results.csv`` and ``report.md`` at the end.

Start-up is hidden where it can be: a local instance starts on a helper thread
(:class:`LocalRay`) while the driver trains the reference of a config with one base net itself
(nothing else could run before it), and the workers import torch and the pipeline meanwhile
(:func:`warm_worker`), so the cascade chains start the moment the reference is done.
Ray is optional: ``pip install -e ".[ray]"``.
"""
import logging
import os
import sys
import threading

from .plan import SweepPlan

from torchprune_flows.errors import UserError

INSTALL_HINT = "--workers needs Ray, which is not installed: pip install -e \".[ray]\" (or pip install ray)"


#: seconds to wait for a cluster at --ray-address (``--ray-timeout``)
CONNECT_TIMEOUT = 20.0

#: Ray's workers raise their own niceness by 15 (``worker_niceness``) unless told otherwise: beside
#: other CPU-bound processes a chain then gets a few per cent of a core (a reference's 3 epochs
#: took 107 s instead of 5.2 s). A local instance is started without it; on a joined cluster the
#: tasks' workers start with this environment, which keeps them at the cluster's own niceness.
NORMAL_PRIORITY = {"env_vars": {"RAY_worker_niceness": "0"}}


class ScaleOutError(UserError):
    """Ray is missing or cannot start; the message says what to do."""


def _ray():
    try:
        import ray
    except ImportError as err:
        raise ScaleOutError(INSTALL_HINT) from err
    return ray


def _host_and_port(address):
    """``(host, port)`` of a ``HOST:PORT`` or ``ray://HOST[:PORT]`` address; None for others (``auto``)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    if address.startswith("ray://") and not port.isdigit():
        host, port = rest, "10001"  # the Ray client's default port
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _reachable(host, port, timeout):
    """None when something accepts TCP connections at ``host:port`` within ``timeout`` seconds
    (a head node that is still starting gets the whole wait), else the last error."""
    import socket
    import time

    deadline, error = time.monotonic() + timeout, None
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(left, 5.0))):
                return None
        except OSError as err:
            error = err
        if deadline - time.monotonic() <= 0:
            return error
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def connect(address, timeout):
    """Join the Ray cluster at ``address`` (before the run folder is written): a bounded wait.

    Ray's own connect retries for minutes when nothing listens at the address (and cannot be
    interrupted meanwhile), so the address is first checked with plain TCP for ``timeout``
    seconds; :class:`ScaleOutError` names the address and how to start a cluster there.
    """
    ray = _ray()
    if ray.is_initialized():
        return ray
    target = _host_and_port(address)
    if target is not None:
        error = _reachable(*target, timeout)
        if error is not None:
            raise ScaleOutError(
                f"no Ray cluster answers at --ray-address {address} within {timeout:g} s "
                f"({type(error).__name__}: {error}); start one on that machine with "
                f"'ray start --head --port {target[1]}' (it prints the address to pass), or wait longer "
                "with --ray-timeout SECONDS")
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as err:  # noqa: BLE001  (Ray reports a failed connect in many ways)
        hint = ("; a cluster with token authentication (what 'ray start' sets up by default in Ray 2.60) "
                "needs RAY_AUTH_MODE=token here and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
                if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" else "")
        raise ScaleOutError(f"cannot join the Ray cluster at {address} ({type(err).__name__}: "
                            f"{(str(err).splitlines() or [''])[0]}){hint}") from err
    return ray


def _set_up_worker(plugins):
    """One torch thread and the config's plugins, in a worker process."""
    import torch

    from torchprune_flows.registry import load_plugins

    from .allocator import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()
    load_plugins(plugins)


def _experiment(run, out_dir, device, plugins):
    """The chain's own :class:`.pipeline.Experiment` in a worker process (one torch thread)."""
    from .pipeline import Experiment

    _set_up_worker(plugins)
    return Experiment(run, out_dir, device)


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


def control_chain(run, out_dir, device, plugins, net_idx, rep, reference_step):
    """Walk the dense control's cycles of one (net, repetition), from the finished reference."""
    experiment = _experiment(run, out_dir, device, plugins)
    reference = experiment.folder.load_state(reference_step)
    experiment.control_sweep(net_idx, rep, reference)
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


class LocalRay:
    """A local Ray instance started on a helper thread, so the driver can work meanwhile.

    ``ray.init`` takes seconds (3-4.5 s on 2 idle cores) and its workers as long again to import
    torch; on this thread both overlap with the reference training in the driver. The thread
    stays alive until :meth:`shut_down`: Ray starts its GCS and raylet with a parent-death
    signal, which Linux ties to the *thread* that started them (a thread that returned after
    ``ray.init`` took the instance down with it). Right after start-up it calls ``warm_up`` (which
    submits tasks; its result is kept in :attr:`warm`), so the workers import what the chains
    need while the driver trains.
    """

    def __init__(self, ray, workers, warm_up=None):
        self._ray = ray
        # "local": a new instance even where `ray start` left an address for ray.init() to join;
        # niceness 0: Ray's workers otherwise renice themselves by +15 (see NORMAL_PRIORITY)
        self._init = dict(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                          _system_config={"worker_niceness": 0})
        self._warm_up = warm_up
        self._up, self._done = threading.Event(), threading.Event()
        self.error = self.warm = None
        self._thread = threading.Thread(target=self._own, name="ray-instance", daemon=True)
        self._thread.start()

    def _own(self):
        try:
            quiet, logger = _NoSigtermWarning(), logging.getLogger("ray._private.worker")
            logger.addFilter(quiet)
            try:
                self._ray.init(**self._init)
            finally:
                logger.removeFilter(quiet)
            if self._warm_up is not None:
                self.warm = self._warm_up()
        except Exception as err:  # noqa: BLE001  (Ray reports start-up problems in many ways)
            self.error = err
        self._up.set()
        self._done.wait()
        if self._ray.is_initialized():
            self._ray.shutdown()

    def wait(self):
        """Block until Ray is up (Ctrl-C still interrupts); raises :class:`ScaleOutError` if it failed."""
        while not self._up.wait(0.2):
            pass
        if self.error is not None:
            raise ScaleOutError(_cannot_start(self.error)) from self.error

    def shut_down(self, wait=True):
        """Stop the instance (after its start-up finished); ``wait=False`` returns at once."""
        self._done.set()
        if wait:
            self.join()

    def join(self):
        while self._thread.is_alive():
            self._thread.join(0.2)


class _NoSigtermWarning(logging.Filter):
    """Drops ``ray.init``'s warning that off the main thread it sets no SIGTERM handler: the
    driver's Ray core worker installs its own, and a SIGTERM ends the driver the same way
    whichever thread started Ray (checked by hand against ``ray.init`` on the main thread)."""

    def filter(self, record):
        return "SIGTERM handler is not set" not in record.getMessage()


def _cannot_start(err):
    return f"cannot start Ray ({type(err).__name__}: {(str(err).splitlines() or [''])[0]})"


def warm_worker(plugins):
    """Import what a chain needs (torch, the pipeline, the plugins) in a fresh worker process,
    and take torch's first optimizer step, which imports ``torch._dynamo`` (about 1 s) on first use."""
    import torch

    from . import pipeline  # noqa: F401  (imported for its imports: torch, the networks, the solvers)

    _set_up_worker(plugins)
    param = torch.nn.Parameter(torch.zeros(1))
    param.grad = torch.zeros(1)
    torch.optim.SGD([param], lr=0.0).step()
    return os.getpid()


def run_on_ray(experiment, run, workers, address=None, plugins=()):
    """Run ``experiment``'s sweep as Ray tasks; returns the result rows (as ``run()`` does).

    On a local instance with one base net, the driver trains that reference itself while Ray
    starts (every other chain waits for it, so workers would idle meanwhile); the workers
    import torch in the meantime, and the cascade chains start on them as soon as it is done.
    """
    ray = _ray()
    exp = experiment.cfg["experiments"]
    plugins = list(plugins)
    gpu = 1 if experiment.device.type == "cuda" else 0
    options = dict(num_cpus=1, num_gpus=gpu, max_retries=3, retry_exceptions=False)
    if address:  # a joined cluster: its workers would run at niceness +15 (a local instance starts without)
        options["runtime_env"] = NORMAL_PRIORITY
    reference_task = ray.remote(reference_chain).options(**options)
    pruning_task = ray.remote(pruning_chain).options(**options)
    control_task = ray.remote(control_chain).options(**options)
    plan = SweepPlan.of(experiment)
    chains = plan.chains_per_net
    local, started_here = None, False
    if not ray.is_initialized():
        if address:  # the command line connects first (:func:`connect`); this is for other callers
            connect(address, CONNECT_TIMEOUT)
            started_here = True
        else:
            warm_task = ray.remote(warm_worker).options(num_cpus=1, num_gpus=0)
            warm_count = min(workers, chains) if exp["numNets"] == 1 else 0
            local = LocalRay(ray, workers, lambda: [warm_task.remote(plugins) for _ in range(warm_count)])
    device = str(experiment.device)
    pending, steps = {}, {}  # task -> number of its steps; task -> its step names
    folder = experiment.folder
    bar = plan.progress_bar(file=sys.stderr)
    try:
        references = {}
        if local is not None and exp["numNets"] == 1:
            experiment.progress = bar
            experiment.reference_step(0)  # in this process, while Ray starts
            references[0] = folder.reference_step(0)
            if gpu:
                import torch

                torch.cuda.empty_cache()  # the chains' workers get the GPU memory
        if local is not None:
            local.wait()
        for net in plan.nets:
            reference = references.get(net.net)
            if reference is None:
                reference = reference_task.remote(run, experiment.out_dir, device, plugins, net.net)
                pending[reference], steps[reference] = 1, [net.reference]
            for chain in net.chains:
                if chain.is_control:
                    task = control_task.remote(run, experiment.out_dir, device, plugins, chain.net, chain.repetition,
                                               reference)
                else:
                    task = pruning_task.remote(run, experiment.out_dir, device, plugins, chain.net, chain.repetition,
                                               chain.method, reference)
                pending[task], steps[task] = len(chain.steps), list(chain.steps)
        # a joined cluster's workers for the chains start (and import) while the reference trains;
        # their results are never read
        _warm_refs = []
        if local is None and address and exp["numNets"] == 1 and chains:
            spare = int(ray.cluster_resources().get("CPU", 1)) - 1  # one CPU stays the reference's
            warm_task = ray.remote(warm_worker).options(num_cpus=1, num_gpus=0, runtime_env=NORMAL_PRIORITY)
            _warm_refs = [warm_task.remote(plugins) for _ in range(min(chains, spare))]
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)  # returns as soon as one is done
            if done:
                ray.get(done[0])  # raises the chain's error, if any
                bar.update(pending.pop(done[0]))
            running = [chain_status(folder, steps[task]) for task in pending]
            bar.set_postfix_str(" | ".join(r for r in running if r)[:200])
    except BaseException:
        _stop(ray, pending, local, started_here, wait=True)
        raise
    finally:
        bar.close()
    _stop(ray, pending, local, started_here, wait=False)  # a local instance shuts down while we write
    try:
        return experiment.write_outputs()
    finally:
        if local is not None:
            local.join()


def _stop(ray, pending, local, started_here, wait):
    for ref in pending:
        ray.cancel(ref, force=True)
    if local is not None:
        local.shut_down(wait=wait)
    elif started_here:
        ray.shutdown()


__all__ = ["CONNECT_TIMEOUT", "INSTALL_HINT", "LocalRay", "NORMAL_PRIORITY", "ScaleOutError", "connect", "control_chain",
           "pruning_chain", "reference_chain", "run_on_ray", "warm_worker"]
