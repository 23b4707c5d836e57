"""Child process: like torchprune's multi-GPU path, spawn a worker that resolves names again.

The launcher's main module imports torchprune_flows and exports its plugins to the environment;
a spawned worker re-imports this main module, so our entries and the plugin's are there too.
"""
import json
import sys

import torch.multiprocessing as mp

import torchprune_flows  # noqa: F401  (as the launcher's main module does)
from torchprune_flows.integrations.torchprune import engine


def worker(rank, queue):
    import torchprune.util.models as models

    from torchprune_flows.registry import NETWORKS

    queue.put({
        "paper_name_is_ours": models.ffjord_l4_h64_sigmoid_da is NETWORKS.get("ffjord_l4_h64_sigmoid_da"),
        "plugin_net": models.spawn_test_flow(num_classes=2),
    })


if __name__ == "__main__":
    engine.export_to_workers([sys.argv[1]])
    engine.prepare_worker_process()
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.spawn(worker, args=(queue,), nprocs=1)
    print(json.dumps(queue.get()))
