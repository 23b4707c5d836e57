"""Built-in networks: toy CNFs (ffjord_*, cnf_*), neural-ODE classifiers (node_*),
tabular flows, multiscale image flows."""
from . import multiscale, tabular, toy  # noqa: F401  (registers the families)

__all__ = ["multiscale", "tabular", "toy"]
