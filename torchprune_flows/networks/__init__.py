"""Built-in networks: toy CNFs (ffjord_*, cnf_*), neural-ODE classifiers (node_*), tabular flows."""
from . import tabular, toy  # noqa: F401  (registers the families)
