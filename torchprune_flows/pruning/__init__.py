"""Pruning with torchprune's semantics: WT (ThresNet) and FT (FilterThresNet), masks via torch."""
from .masks import (apply_masks, count_nonzero, count_parameters, effective_tensors, export_state,
                    get_masks, import_state)
from .methods import ALIASES, METHODS, PruningError, canonical_method, prune, prune_filters, prune_weights
from .structure import prunable_layers, structured_chains

__all__ = [
    "ALIASES", "METHODS", "PruningError", "apply_masks", "canonical_method", "count_nonzero",
    "count_parameters", "effective_tensors", "export_state", "get_masks", "import_state", "prunable_layers",
    "prune", "prune_filters", "prune_weights", "structured_chains",
]
