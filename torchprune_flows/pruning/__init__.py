"""Pruning with torchprune's semantics: WT (ThresNet) and FT (FilterThresNet), masks via torch;
more methods register with ``torchprune_flows.register_method``."""
from .compact import compact, write_back
from .masks import (apply_masks, count_nonzero, count_parameters, effective_tensors, export_state,
                    get_masks, import_state)
from .masks import set_mask
from .methods import (KEEP_RATIO_COUNTS, PruningError, canonical_method, method_names, prune, prune_filters,
                      prune_weights, pruning_method)
from .protocol import (PrunableField, PrunableMixin, is_prunable_type, prunable_layers, structured_chains,
                       unit_companions)

__all__ = [
    "KEEP_RATIO_COUNTS", "PrunableField", "PrunableMixin", "PruningError", "apply_masks",
    "canonical_method", "compact",
    "count_nonzero", "count_parameters", "effective_tensors", "export_state", "get_masks", "import_state",
    "is_prunable_type", "method_names", "prunable_layers", "prune", "prune_filters", "prune_weights",
    "pruning_method", "set_mask", "structured_chains",
    "unit_companions", "write_back",
]
