"""Integrations with other libraries: :mod:`.torchprune` (torchprune's lookups and its runner)."""

__all__ = []  # a namespace of integration packages
