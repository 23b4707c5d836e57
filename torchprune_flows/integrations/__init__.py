"""Integrations with other libraries: :mod:`.torchprune` (torchprune's lookups and its runner)."""
