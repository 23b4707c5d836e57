"""Built-in datasets (registered by name on import)."""
from . import toy  # noqa: F401
from . import tabular  # noqa: F401
from . import images  # noqa: F401
from .splits import SPLITS, resolve_split  # noqa: F401

__all__ = ["SPLITS", "images", "resolve_split", "tabular", "toy"]
