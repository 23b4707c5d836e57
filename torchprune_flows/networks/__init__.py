"""Built-in networks: toy CNFs (ffjord_*, cnf_*) and neural-ODE classifiers (node_*)."""
from . import toy  # noqa: F401  (registers the families)
