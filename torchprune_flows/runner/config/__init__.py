"""torchprune's YAML experiment config, in three layers that change for different reasons:

1. :mod:`.loading` reads the YAML file, resolves ``file:`` includes and applies
   ``"training.numEpochs=5"``-style overrides;
2. :mod:`.checks` is a small validator library (types, mappings against a schema, close-match hints);
3. :mod:`.schema` is torchprune's format and its meaning: the sections, their defaults, the keep
   ratios of ``experiments.spacing`` and the runs of ``customizations``.

:func:`resolve_config` returns the checked config (what ``config.yaml`` holds) and its runs, each
with its keep ratios resolved once; :func:`load_config` returns just the checked config.
"""
from .checks import ConfigError
from .loading import parse_override
from .schema import (ResolvedConfig, RunConfig, expand_customizations, keep_ratios, load_config, resolve_config,
                     retraining_config)

__all__ = [
    "ConfigError",
    "ResolvedConfig",
    "RunConfig",
    "resolve_config",
    "load_config",
    "parse_override",
    "keep_ratios",
    "retraining_config",
    "expand_customizations",
]
