"""torchprune-flows: Sparse Flows (pruned continuous normalizing flows and neural ODEs).

Importing the package registers the built-in networks, datasets, losses and metrics and makes
torchprune's lookup modules resolve them whenever torchprune is imported (see
:mod:`torchprune_flows.integrations.torchprune.bridge`; torchprune itself is not imported here). In a
worker process of ``--engine torchprune`` it also loads the launcher's plugins and patches.
"""
from .registry import (  # noqa: F401
    build_dataset,
    build_network,
    list_entries,
    list_families,
    register_dataset,
    register_loss,
    register_method,
    register_metric,
    register_network,
)
from . import data, networks, objectives  # noqa: F401,E402
from .cnf import CNF, SolverSpec, nfe_counts  # noqa: F401,E402
from .pruning.compact import compact  # noqa: F401,E402
from .export import export_flow  # noqa: F401,E402

__version__ = "0.1.0"
from .integrations.torchprune.bridge import install_into_torchprune, maybe_install_into_torchprune  # noqa
from .integrations.torchprune.engine import prepare_worker_process  # noqa: E402

maybe_install_into_torchprune()
prepare_worker_process()

__all__ = [
    "CNF", "SolverSpec", "build_dataset", "build_network", "compact", "data", "export_flow", "install_into_torchprune",
    "list_entries", "list_families", "networks", "nfe_counts", "objectives", "register_dataset", "register_loss",
    "register_method", "register_metric", "register_network",
]
