"""How many threads torch uses for a run: chosen deliberately, not one per core.

Small flows are dominated by per-operation overhead, and torch's default (one OpenMP thread per
core) makes every operation wait for all cores: on a 2-core machine that is also doing other
work, a quickstart batch took 4.7-6.7 s with 2 threads against 0.26-0.33 s with 1 (issue 12).

The rule, first match wins:

1. ``--threads N``;
2. the environment: ``TORCHPRUNE_FLOWS_THREADS``, else ``OMP_NUM_THREADS``;
3. networks under :data:`SMALL_MODEL` parameters: 1 thread;
4. otherwise the free cores: the core count less the 1-minute load average (at least 1).
"""
import os

import torch

#: Below this many parameters one thread is fastest (per-op overhead dominates).
SMALL_MODEL = 1_000_000


def free_cores():
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        load = 0.0
    return max(1, min(cores, int(round(cores - load))))


def choose_threads(requested=None, num_parameters=0, environ=None):
    """``(threads, why)`` by the rule above."""
    environ = os.environ if environ is None else environ
    if requested:
        return int(requested), "--threads"
    for variable in ("TORCHPRUNE_FLOWS_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), variable
    if num_parameters < SMALL_MODEL:
        return 1, f"a network under {SMALL_MODEL:,} parameters"
    return free_cores(), "the free cores"


def use_threads(requested=None, num_parameters=0):
    """Set torch's intra-op thread count by :func:`choose_threads`; returns ``(threads, why)``."""
    threads, why = choose_threads(requested, num_parameters)
    torch.set_num_threads(threads)
    return threads, why
