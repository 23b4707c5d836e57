"""A finished (or partly finished) experiment folder: its config, result rows and trained nets.

Used by the tools that work on results after the run (``experiment.sample``, analyses).
"""
import os

import yaml

from torchprune_flows.pruning import canonical_method, import_state
from torchprune_flows.registry import load_plugins

from .checkpoints import load_checkpoint, load_json
from .results import REFERENCE


class RunError(ValueError):
    """A folder or a selection that does not exist; printed as one line."""


class FinishedRun:
    """``RUN_DIR`` written by ``python -m experiment``: ``config.yaml``, ``steps/``, ``checkpoints/``."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        config = os.path.join(run_dir, "config.yaml")
        if not os.path.isdir(os.path.join(run_dir, "steps")) or not os.path.exists(config):
            raise RunError(f"{run_dir} is not an experiment folder (expected {config} and steps/); "
                           "pass the --out folder of a run (one per customization)")
        with open(config) as handle:
            self.cfg = yaml.safe_load(handle)
        load_plugins(self.cfg.get("plugins", []))
        self.steps = {name[:-5]: load_json(os.path.join(run_dir, "steps", name))
                      for name in sorted(os.listdir(os.path.join(run_dir, "steps"))) if name.endswith(".json")}

    def select(self, method=None, keep=None, net=0, repetition=0):
        """Step name of the base net (``method`` None) or of the pruned net closest to ``keep``."""
        if method is None:
            candidates = {s: r for s, r in self.steps.items() if r["method"] == REFERENCE and r["net"] == net}
        else:
            method = canonical_method(method)
            candidates = {s: r for s, r in self.steps.items()
                          if r["method"] == method and r["net"] == net and r["repetition"] == repetition}
        if not candidates:
            what = "base net" if method is None else f"{method} step (repetition {repetition})"
            raise RunError(f"no finished {what} of net {net} in {self.run_dir}; finish the run or choose another")
        if method is None:
            return next(iter(candidates))
        if keep is None:
            raise RunError("give --keep with --method: the keep ratio of the pruned net to load")
        return min(candidates, key=lambda s: abs(candidates[s]["keep_ratio"] - keep))

    def load_network(self, step, device="cpu"):
        """The trained (and pruned) network of ``step`` with its masks in place."""
        from .pipeline import Experiment

        state = load_checkpoint(os.path.join(self.run_dir, "checkpoints", step + ".pt"), map_location=device)
        net = Experiment(self.cfg, self.run_dir, device).build_network()
        return import_state(net, state).eval()
