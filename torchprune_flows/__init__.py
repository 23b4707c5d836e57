"""torchprune-flows: Sparse Flows (pruned continuous normalizing flows and neural ODEs).

Importing the package registers the built-in networks, datasets, losses and metrics and, when
``torchprune`` is importable, installs every entry into torchprune's lookup modules.
"""
from .registry import (  # noqa: F401
    build_dataset,
    build_network,
    list_entries,
    list_families,
    register_dataset,
    register_loss,
    register_metric,
    register_network,
)
from . import data, networks, objectives  # noqa: F401,E402
from .cnf import CNF, SolverSpec, nfe_counts  # noqa: F401,E402

__version__ = "0.1.0"
from .registry.torchprune_bridge import install_into_torchprune, maybe_install_into_torchprune  # noqa
maybe_install_into_torchprune()
