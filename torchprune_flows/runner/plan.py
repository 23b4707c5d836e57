"""The sweep of a config as data: its base nets, and per net the chains of steps that follow it.

Every runner walks the same :class:`SweepPlan`: the sequential pipeline in order, Ray as one
task per reference and per chain, torchrun through the sequential pipeline on every rank. A
chain is one (repetition, method) cascade over the keep ratios, or one repetition's dense
control over the same number of cycles; its steps are named by :class:`.runs.RunFolder`.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from tqdm import tqdm

from .results import DENSE_CONTROL
from .runs import RunFolder


@dataclass(frozen=True)
class Chain:
    """The steps one chain finishes in order, each from the previous one's weights."""

    net: int
    repetition: int
    method: Optional[str]  # the pruning method; None for the dense control
    steps: Tuple[str, ...]

    @property
    def is_control(self):
        return self.method is None

    @property
    def label(self):
        return DENSE_CONTROL if self.is_control else self.method


@dataclass(frozen=True)
class NetPlan:
    """A base net's reference step and the chains that start from its weights."""

    net: int
    reference: str
    chains: Tuple[Chain, ...]


class SweepPlan:
    """Nets x repetitions x (methods, then the dense control) over the keep ratios."""

    def __init__(self, num_nets, num_repetitions, methods, control, num_keep_ratios, train_only=False):
        self.num_keep_ratios = 0 if train_only else num_keep_ratios
        kinds = [] if train_only else list(methods) + ([None] if control else [])
        self.nets = tuple(
            NetPlan(net, RunFolder.reference_step(net),
                    tuple(self._chain(net, rep, method) for rep in range(num_repetitions) for method in kinds))
            for net in range(num_nets))

    def _chain(self, net, rep, method):
        if method is None:
            steps = [RunFolder.control_step(net, rep, i) for i in range(self.num_keep_ratios)]
        else:
            steps = [RunFolder.pruned_step(net, rep, method, i) for i in range(self.num_keep_ratios)]
        return Chain(net, rep, method, tuple(steps))

    @classmethod
    def of(cls, experiment):
        """The plan of a :class:`.pipeline.Experiment`."""
        exp = experiment.cfg["experiments"]
        return cls(exp["numNets"], exp["numRepetitions"], experiment.methods, experiment.control,
                   len(experiment.keep_ratios), train_only=experiment.mode == "train")

    @property
    def chains_per_net(self):
        return len(self.nets[0].chains) if self.nets else 0

    @property
    def total_steps(self):
        return sum(1 + sum(len(chain.steps) for chain in net.chains) for net in self.nets)

    def progress_bar(self, **kwargs):
        """The sweep's one progress bar over every step (finished ones count when skipped)."""
        return tqdm(total=self.total_steps, desc="steps", unit="step", dynamic_ncols=True, **kwargs)


__all__ = ["Chain", "NetPlan", "SweepPlan"]
