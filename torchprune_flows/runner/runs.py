"""The run folder: the one place that knows its layout, for the pipeline that writes it and the
tools that read it afterwards (``experiment.sample``, ``experiment.analyze``).

A run folder (``--out``, or one sub-folder per customization) holds::

    config.yaml                  the resolved config (a resume must pass the same one)
    results.csv, report.md       the results table and its rendering (:mod:`.results`, :mod:`.render`)
    plots/*.png                  the report's plots
    steps/<step>.json            the result row of a finished step
    checkpoints/<step>.pt        its network (``<step>.partial.pt`` while it trains)
    logs/<step>.jsonl            one training record per epoch
    samples/<step>.npy           samples drawn by ``experiment.sample``
    analysis/                    outputs of ``experiment.analyze``
    export/<step>.pt             standalone flows written by ``experiment.analyze export``
    .lock                        held by the run writing the folder

:class:`RunFolder` builds every one of these paths; no other module joins them.

Step names: ``net{N}_ReferenceNet`` for a base net, ``net{N}_rep{R}_{method}_{i:02d}`` for the
``i``-th keep ratio of the resolved config (the position, since two spacing entries may share a
ratio), ``net{N}_rep{R}_DenseControl_{i:02d}`` for the ``i``-th cycle of the dense control
(``experiments.control: dense``); a row's ``cycle`` is ``i + 1`` (0 for a base net). Reading
back, a step is found by its exact key ``(net, repetition, method, keep ratio)``
(:meth:`RunFolder.find`; the control's cycles share a key: the first is found); a keep ratio
typed by a user matches a finished step's within the rounding of an achieved ratio
(:data:`KEEP_TOLERANCE`, :meth:`RunFolder.select`).
"""
import os

import yaml

from torchprune_flows.errors import UserError, check_keep_ratio
from torchprune_flows.pruning import canonical_method, import_state
from torchprune_flows.registry import load_plugins

from .atomic_files import load_checkpoint, load_json, save_checkpoint, save_json, save_text
from .networks import build_network
from .results import DENSE_CONTROL, REFERENCE


class RunError(UserError, ValueError):
    """A folder or a selection that does not exist; printed as one line."""


def keep_matches(typed, nominal, achieved=None):
    """Whether a user-typed keep ratio means a step of keep ratio ``nominal`` (that achieved
    ``achieved``): equal to either within 0.5 % (how closely pruning meets a ratio) or 5e-4 (the
    report's prune ratios are shown to 0.1 %)."""
    return any(abs(typed - ratio) <= max(0.005 * ratio, 5e-4) for ratio in (nominal, achieved) if ratio is not None)


def result_subfolders(parent):
    """The names (sorted) of the sub-folders of ``parent`` that hold a results.csv."""
    return sorted(name for name in os.listdir(parent)
                  if os.path.isfile(RunFolder(os.path.join(parent, name)).results_path))


class RunFolder:
    """The files of one run folder at ``run_dir``; :meth:`open` reads a finished (or partial) one."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.cfg = None
        self.steps = {}

    # -- the layout ------------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.run_dir, *parts)

    @property
    def config_path(self):
        return self.path("config.yaml")

    @property
    def results_path(self):
        return self.path("results.csv")

    @property
    def report_path(self):
        return self.path("report.md")

    @property
    def plots_dir(self):
        return self.path("plots")

    @property
    def analysis_dir(self):
        return self.path("analysis")

    @property
    def lock_path(self):
        return self.path(".lock")

    @property
    def steps_dir(self):
        return self.path("steps")

    @property
    def checkpoints_dir(self):
        return self.path("checkpoints")

    @property
    def logs_dir(self):
        return self.path("logs")

    def checkpoint(self, step):
        return os.path.join(self.checkpoints_dir, step + ".pt")

    def partial_checkpoint(self, step):
        return os.path.join(self.checkpoints_dir, step + ".partial.pt")

    def record(self, step):
        return os.path.join(self.steps_dir, step + ".json")

    def log(self, step):
        return os.path.join(self.logs_dir, step + ".jsonl")

    def samples(self, step):
        return self.path("samples", step + ".npy")

    def export(self, step):
        return self.path("export", step + ".pt")

    def subfolder(self, name):
        """The run folder of customization ``name`` inside this (a config with customizations)."""
        return RunFolder(self.path(name))

    @staticmethod
    def reference_step(net):
        return f"net{net}_{REFERENCE}"

    @staticmethod
    def pruned_step(net, repetition, method, index):
        """The step of the ``index``-th keep ratio of the resolved config."""
        return f"net{net}_rep{repetition}_{method}_{index:02d}"

    @classmethod
    def control_step(cls, net, repetition, index):
        """The ``index``-th retraining cycle of the dense control (beside the ``index``-th keep ratio)."""
        return cls.pruned_step(net, repetition, DENSE_CONTROL, index)

    @staticmethod
    def step_cycle(step):
        """The retraining cycle a step's net has been through: 0 for a base net, ``i + 1`` for
        the ``i``-th keep ratio (or control cycle)."""
        return 0 if step.endswith("_" + REFERENCE) else int(step.rsplit("_", 1)[1]) + 1

    # -- writing (the pipeline) ------------------------------------------------------
    def write_config(self, cfg):
        """``config.yaml``: the resolved config, key order kept (a resume compares it)."""
        save_text(yaml.safe_dump(cfg, sort_keys=False), self.config_path)

    def read_config(self):
        with open(self.config_path) as handle:
            return yaml.safe_load(handle)

    def is_finished(self, step):
        return os.path.exists(self.record(step)) and os.path.exists(self.checkpoint(step))

    def finish(self, step, row, state):
        """Store a finished step: its network, then its result row; drop the partial checkpoint."""
        save_checkpoint(state, self.checkpoint(step))
        save_json(row, self.record(step))
        if os.path.exists(self.partial_checkpoint(step)):
            os.remove(self.partial_checkpoint(step))

    def load_state(self, step, map_location="cpu"):
        return load_checkpoint(self.checkpoint(step), map_location=map_location)

    def read_records(self):
        """``{step: result row}`` of the finished steps, by step name (a record of an older run,
        without ``cycle``, gets it from its step name)."""
        folder = self.steps_dir
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        records = {n[:-5]: load_json(os.path.join(folder, n)) for n in names if n.endswith(".json")}
        for step, row in records.items():
            row.setdefault("cycle", self.step_cycle(step))
        return records

    # -- reading (sampling, analyses) ------------------------------------------------
    @classmethod
    def open(cls, run_dir):
        """The finished run at ``run_dir``: its config (plugins loaded) and step records."""
        folder = cls(run_dir)
        if not os.path.exists(folder.config_path):
            raise RunError(f"{run_dir} is not an experiment folder (expected {folder.config_path} and steps/); "
                           "pass the --out folder of a run (one per customization)")
        folder.steps = folder.read_records()
        runs = [] if folder.steps else result_subfolders(run_dir)
        if runs:
            raise RunError(f"{run_dir} holds one run per customization; pass one of its folders: "
                           f"{', '.join(os.path.join(run_dir, name) for name in runs)}")
        if not folder.steps:
            raise RunError(f"no finished step yet in {run_dir} (the run is in progress or was interrupted); "
                           "wait for its first step, or rerun its command to resume it")
        folder.cfg = folder.read_config()
        load_plugins(folder.cfg.get("plugins", []))
        return folder

    def find(self, net, repetition, method, keep_ratio):
        """The finished step with exactly this key (a base net: ``method`` REFERENCE), or None."""
        key = (int(net), int(repetition), str(method), float(keep_ratio))
        for step, row in (self.steps or self.read_records()).items():
            if (row["net"], row["repetition"], row["method"], float(row["keep_ratio"])) == key:
                return step
        return None

    def select(self, method=None, keep=None, net=0, repetition=0, closest=False):
        """Step of the base net (``method`` None), or of the finished pruned net whose keep ratio
        a user-typed ``keep`` means (:func:`keep_matches`; ``closest``: the nearest finished one,
        for defaults no user typed); RunError when there is none."""
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
        check_keep_ratio(keep, name="--keep", error=RunError)
        nearest = lambda s: abs(candidates[s]["keep_ratio"] - keep)  # noqa: E731
        if closest:
            return min(candidates, key=nearest)
        matches = [s for s, r in candidates.items() if keep_matches(keep, r["keep_ratio"], _achieved(r))]
        if matches:
            return min(matches, key=nearest)
        finished = ", ".join(f"{r:.4g}" for r in sorted({c["keep_ratio"] for c in candidates.values()}, reverse=True))
        pending = any(keep_matches(keep, ratio) for ratio in self._configured_ratios())
        state = "is not finished yet" if pending else "is not a keep ratio of this run"
        raise RunError(f"--keep {keep:g} for {method} (net {net}, repetition {repetition}) {state} in "
                       f"{self.run_dir}; finished keep ratios: {finished}")

    def require_converged(self, step, use="sampled"):
        """RunError naming ``step``, its recorded reason and the steps that can be ``use``-d, when
        its training did not converge (its checkpoint then holds the pruned, untrained weights)."""
        row = self.steps[step]
        if row.get("converged", True) in (True, "True", "true"):
            return
        reason = (row.get("extra") or {}).get("error") or "no reason recorded"
        usable = [s for s, r in self.steps.items() if r.get("converged", True) in (True, "True", "true")
                  and r["net"] == row["net"]]
        shown = ", ".join(_describe(self.steps[s]) for s in usable) or "none"
        raise RunError(f"step {step} ({_describe(row)}) did not converge ({reason}) and cannot be {use}; "
                       f"finished steps of net {row['net']} that can: {shown}")

    def _configured_ratios(self):
        """The keep ratios the run's config asks for (empty if the config cannot say)."""
        from .config.schema import keep_ratios

        try:
            return keep_ratios((self.cfg or {}).get("experiments") or {})
        except Exception:  # noqa: BLE001  (only used to word a message)
            return []

    def load_network(self, step, device="cpu"):
        """The trained (and pruned) network of ``step`` with its masks in place."""
        state = self.load_state(step, map_location=device)
        return import_state(build_network(self.cfg, device), state).eval()



def _achieved(row):
    """The fraction of parameters a step's net kept, when its record says."""
    try:
        return float(row["params"]) / float(row["params_original"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _describe(row):
    """``unpruned`` or ``FilterThresNet keep 0.2`` (repetition added when not 0)."""
    if row["method"] == REFERENCE:
        return "unpruned"
    rep = f" repetition {row['repetition']}" if row.get("repetition") else ""
    return f"{row['method']} keep {float(row['keep_ratio']):.4g}{rep}"
