"""Running torchprune's own experiment runner on this package's flows.

- :mod:`.engine`: ``torchprune-flows CONFIG --engine torchprune`` (also ``python -m experiment
  CONFIG --engine torchprune``): finds torchprune's runner, registers our entries in it and in
  every worker it spawns, and runs it unchanged.
- :mod:`.compat`: the run-time patches torchprune v2.2.0 needs on a current stack.

The name lookups themselves live in :mod:`torchprune_flows.integrations.torchprune.bridge`.
"""

__all__ = []  # import the modules: bridge, engine, compat (engine imports torchprune lazily)
