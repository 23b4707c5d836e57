"""Peak tensor memory of one call: what a forward + backward pass of a flow holds at its worst."""
import warnings

import torch

__all__ = ["peak_memory_mib"]


def _cpu_peak_bytes(fn, args):
    # torch.profiler records every CPU tensor allocation (+bytes) and free (-bytes); the process's
    # RSS would mix in Python's heap and the pages a caching allocator keeps.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(*args)
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        if str(event.device_type()).endswith("CPU"):
            current += event.nbytes()
            peak = max(peak, current)
    return peak


def peak_memory_mib(fn, *args, device="cpu"):
    """Peak memory (MiB) of the tensors ``fn(*args)`` allocates on ``device``, above what was
    allocated before the call (tensors alive before it do not count, the ones it returns do)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(*args)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    return _cpu_peak_bytes(fn, args) / 2 ** 20
