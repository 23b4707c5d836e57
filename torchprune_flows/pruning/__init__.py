"""Pruning with torchprune's semantics: WT (ThresNet) and FT (FilterThresNet), masks via torch."""
from .compact import compact, write_back
from .masks import (apply_masks, count_nonzero, count_parameters, effective_tensors, export_state,
                    get_masks, import_state)
from .methods import (ALIASES, KEEP_RATIO_COUNTS, METHODS, PruningError, canonical_method, prune, prune_filters,
                      prune_weights)
from .protocol import (PrunableField, PrunableMixin, is_prunable_type, prunable_layers, structured_chains,
                       unit_companions)

__all__ = [
    "ALIASES", "KEEP_RATIO_COUNTS", "METHODS", "PrunableField", "PrunableMixin", "PruningError", "apply_masks",
    "canonical_method", "compact",
    "count_nonzero", "count_parameters", "effective_tensors", "export_state", "get_masks", "import_state",
    "is_prunable_type", "prunable_layers", "prune", "prune_filters", "prune_weights", "structured_chains",
    "unit_companions", "write_back",
]
