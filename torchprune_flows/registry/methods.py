"""Pruning methods as registry entries: what the runner, the contract tests and the torchprune
launcher need to know of a method besides its pruning function.

    from torchprune_flows import register_method

    @register_method("RandomNet", alias="RP")
    def prune_randomly(net, keep_ratio, params_original, over="all_parameters"):
        ...  # set masks with torchprune_flows.pruning.set_mask; return the keep ratio reached

The function prunes ``net`` in place to ``keep_ratio`` counted ``over`` (one of
``torchprune_flows.pruning.KEEP_RATIO_COUNTS``; ``params_original`` is the unpruned parameter
count) by restricting masks (cascaded calls only add to them), and returns the keep ratio it
reached in that count.
"""
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class PruningMethod:
    """A registered pruning method.

    ``name``: the name results, step names and configs carry (for WT/FT torchprune's class
    names, ThresNet / FilterThresNet); ``alias``: a short name configs may use (WT, FT);
    ``structured``: it removes whole units, so the runner retrains the compacted net (faster,
    same function); ``in_torchprune``: torchprune v2.2.0 has a method of this name, so its own
    runner (``--engine torchprune``) can run it; any other runs under our runner only.
    """

    name: str
    prune: Callable
    alias: Optional[str] = None
    structured: bool = False
    in_torchprune: bool = False

    def __call__(self, net, keep_ratio, params_original, over="all_parameters"):
        return self.prune(net, keep_ratio, params_original, over)

    @property
    def label(self):
        """The short name where there is one (tables, plots)."""
        return self.alias or self.name


__all__ = ["PruningMethod"]
