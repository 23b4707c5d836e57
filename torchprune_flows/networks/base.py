"""The pruning protocol as networks use it; it is stated in :mod:`torchprune_flows.pruning.protocol`."""
from ..pruning.protocol import PrunableField, PrunableMixin, is_prunable_type

__all__ = ["PrunableField", "PrunableMixin", "is_prunable_type"]
