"""The Sparse Flows pipeline for one resolved config: train, prune, retrain, evaluate, report.

For every base net: train it (``ReferenceNet``); then for every repetition and method, walk the
keep ratios in order: prune (in ``cascade`` mode from the previous ratio's retrained weights, in
``retrain`` mode one-shot from the base net), retrain with the rewound schedule, evaluate. With
``experiments.control: dense``, per repetition the dense control (``DenseControl``) walks the same
cycles without pruning: each retrains the previous cycle's weights with the same rewound
schedule, so a reader can tell the effect of sparsity from that of the extra training.

Every finished step leaves its network and its result row in the run folder (layout and step
names: :class:`.runs.RunFolder`); a rerun skips finished steps, and an unfinished training
resumes from its last epoch. The rows become ``results.csv`` (:mod:`.results`) and ``report.md``
with its plots (:mod:`.render`).
"""
import json
import math
import time
import zlib

import torch
from torch.nn.utils import prune as torch_prune
from tqdm import tqdm

from torchprune_flows.analysis.flops import vector_field_flops
from torchprune_flows.pruning import (canonical_method, compact, count_nonzero, count_parameters, export_state,
                                      import_state, pruning_method, write_back)
from torchprune_flows.registry import DATASETS, LOSSES, METRICS

from .atomic_files import save_text
from .config import retraining_config
from .data import build_loaders, build_splits
from .distributed import is_writer, prune_once, run_once
from .networks import build_network
from .render import write_report
from .results import COLUMN_DEFAULTS, DENSE_CONTROL, REFERENCE, RESULT_COLUMNS, write_results_csv
from .plan import SweepPlan
from .runs import RunFolder
from .training import DidNotConverge, evaluate, evaluation_estimator, train

#: losses whose test value is an NLL in nats, comparable with the data's entropy
NATS_LOSSES = ("NLLPriorLoss", "NLLNatsLoss")

LOSS_LABELS = {"NLLPriorLoss": "test NLL (nats)", "NLLNatsLoss": "test NLL (nats)",
               "NLLBitsLoss": "test NLL (bits/dim)", "CrossEntropyLoss": "test cross-entropy"}


def step_seed(*parts):
    return zlib.crc32("/".join(map(str, parts)).encode()) % (2**31)


def build_loss(cfg):
    training = cfg["training"]
    return LOSSES.get(training["loss"])(**training["lossKwargs"])


class Experiment:
    """One run of a config (a :class:`.config.RunConfig`) and its output folder."""

    def __init__(self, run, out_dir, device="cpu"):
        cfg = run.cfg
        self.run_config = run
        self.cfg = cfg
        self.out_dir = out_dir
        self.folder = RunFolder(out_dir)
        self.device = torch.device(device)
        self.training = cfg["training"]
        self.retraining = retraining_config(cfg)
        self.methods = [canonical_method(m) for m in cfg["experiments"]["methods"]]
        self.mode = cfg["experiments"]["mode"]
        self.keep_ratios = list(run.keep_ratios) if self.mode != "train" else []
        self.control = cfg["experiments"].get("control") == "dense"
        self.loss_fn = build_loss(cfg)
        out_size = cfg["network"]["outputSize"]
        self.metrics = [METRICS.get(m["type"])(out_size, **m.get("kwargs", {}))
                        for m in self.training["metricsTest"]]
        self._splits = None
        self.progress = tqdm(disable=True)  # the sweep's bar while a runner walks the plan

    # -- building blocks -------------------------------------------------------------
    def build_network(self):
        return build_network(self.cfg, self.device)

    @property
    def splits(self):
        if self._splits is None:
            self._splits = build_splits(self.cfg)
        return self._splits

    # -- the sweep -------------------------------------------------------------------
    def run(self):
        plan = SweepPlan.of(self)
        self.progress = plan.progress_bar(position=0)
        try:
            for net in plan.nets:
                reference = self.reference_step(net.net)
                for chain in net.chains:
                    if chain.is_control:
                        self.control_sweep(chain.net, chain.repetition, reference)
                    else:
                        self.prune_sweep(chain.net, chain.repetition, chain.method, reference)
        finally:
            self.progress.close()
        return self.write_outputs()

    def reference_step(self, net_idx):
        step = self.folder.reference_step(net_idx)
        if self.folder.is_finished(step):
            self.progress.update()
            return self.folder.load_state(step)
        torch.manual_seed(step_seed(self.cfg["seed"], net_idx, "init"))
        net = self.build_network()
        params = count_parameters(net)
        row, state = self._train_and_evaluate(net, step, self.training, 0, f"net{net_idx} train",
                                              step_seed(self.cfg["seed"], net_idx, "train"))
        row.update(net=net_idx, repetition=0, method=REFERENCE, keep_ratio=1.0, cycle=0, params_original=params)
        self._finish(step, row, state)
        return state

    def prune_sweep(self, net_idx, rep, method, reference):
        previous = reference
        params_original = count_parameters(self._from_state(reference))
        for i, keep in enumerate(self.keep_ratios):
            step = self.folder.pruned_step(net_idx, rep, method, i)
            if self.folder.is_finished(step):
                previous = self.folder.load_state(step)
                self.progress.update()
                continue
            seed = step_seed(self.cfg["seed"], net_idx, rep, method, i)
            start = previous if self.mode in ("cascade", "cascade-rewind") else reference
            net = self._from_state(start)
            pruned = prune_once(net, method, keep, params_original,  # under torchrun: on rank 0, broadcast
                                self.cfg["experiments"].get("keepRatioOver", "all_parameters"))
            if self.mode == "cascade-rewind":  # weights back to the trained base net, masks kept
                net = self._from_state({"state_dict": reference["state_dict"], "masks": pruned["masks"]})
            desc = f"net{net_idx} r{rep} {method} keep={keep:.3f}"
            compact_training = pruning_method(method).structured  # whole units gone: retrain the smaller net
            row, state = self._train_and_evaluate(net, step, self._retraining_at(i), self.retraining["startEpoch"],
                                                  desc, seed, compact_training=compact_training)
            row.update(net=net_idx, repetition=rep, method=method, keep_ratio=keep, cycle=i + 1,
                       params_original=params_original)
            if not row["converged"]:
                state = pruned  # the next ratio starts from the pruned, not the diverged, weights
            self._finish(step, row, state)
            previous = state

    def control_sweep(self, net_idx, rep, reference):
        """The dense control: one retraining cycle per keep ratio, as in the cascade (same rewound
        schedule, fresh optimizer, seeds derived alike), each from the previous cycle's weights,
        without pruning."""
        previous = reference
        params_original = count_parameters(self._from_state(reference))
        for i in range(len(self.keep_ratios)):
            step = self.folder.control_step(net_idx, rep, i)
            if self.folder.is_finished(step):
                previous = self.folder.load_state(step)
                self.progress.update()
                continue
            seed = step_seed(self.cfg["seed"], net_idx, rep, DENSE_CONTROL, i)
            desc = f"net{net_idx} r{rep} {DENSE_CONTROL} cycle={i + 1}"
            row, state = self._train_and_evaluate(self._from_state(previous), step, self._retraining_at(i),
                                                  self.retraining["startEpoch"], desc, seed)
            row.update(net=net_idx, repetition=rep, method=DENSE_CONTROL, keep_ratio=1.0, cycle=i + 1,
                       params_original=params_original)
            if not row["converged"]:
                state = previous  # the next cycle starts from this cycle's start, not the diverged weights
            self._finish(step, row, state)
            previous = state

    def _retraining_at(self, i):
        """The retraining config of the ``i``-th cycle (None: ``retrainIterations`` stops before it)."""
        retrain_iterations = self.cfg["experiments"]["retrainIterations"]
        return self.retraining if retrain_iterations == -1 or i < retrain_iterations else None

    def _from_state(self, state):
        return import_state(self.build_network(), state)

    def _train_and_evaluate(self, net, step, tcfg, start_epoch, desc, seed, compact_training=False):
        """Train (``tcfg``; None: no training) and evaluate ``net`` in place; ``(row, state)``.

        A pruned net runs compact (:func:`compact`: removed units physically gone, same function),
        so every keep ratio costs less: evaluation always, training where the method removes whole
        units (FT). The trained compact weights are written back into ``net``, whose masks stay
        the source of truth of what the checkpoints hold.
        """
        pruned = torch_prune.is_pruned(net)
        work = compact(net) if pruned and compact_training else net
        loaders = build_loaders(self.splits, tcfg or self.training, seed)
        summary = {"epochs": 0, "seconds": 0.0, "lr_start": None}
        converged, error = True, ""
        log_path = self.folder.log(step)
        if tcfg is not None:
            ckpt = self.folder.partial_checkpoint(step)
            log = _jsonl_writer(log_path)
            try:
                summary = train(work, loaders, tcfg, self.loss_fn, self.metrics, self.device, start_epoch, seed,
                                ckpt, desc=desc, log=log)
            except DidNotConverge as err:
                converged, error = False, str(err)
        if work is not net:
            write_back(work, net)
        results, eval_started = {}, time.time()
        if converged:
            evaluated = work if work is not net else (compact(net) if pruned else net)
            results = run_once(self._evaluate, evaluated, loaders, seed)  # under torchrun: on rank 0, broadcast
            converged = all(math.isfinite(r["loss"]) for r in results.values())
            error = "" if converged else "non-finite evaluation loss"
        nan = {"loss": math.nan, "loss_se": math.nan, "metric": math.nan, "metric2": math.nan,
               "nfe_forward": math.nan, "estimator": ""}
        test, val = results.get("test", nan), results.get("val", nan)
        history = summary.get("history") or [{}]
        nonzero = count_nonzero(net)
        last = history[-1]
        per_batch = last["seconds"] / last["batches"] if last.get("batches") else math.nan
        row = dict(
            prune_ratio=None, params=nonzero, test_loss=test["loss"], test_loss_se=test["loss_se"],
            estimator=test["estimator"] or evaluation_estimator(net)[1], test_metric=test["metric"],
            test_metric2=test["metric2"], val_loss=val["loss"], nfe_forward=test["nfe_forward"],
            nfe_backward=history[-1].get("nfe_backward", math.nan), epochs=summary["epochs"],
            flops=vector_field_flops(net, self.splits["test"][0][0].unsqueeze(0).to(self.device)) / 1e6,
            seconds_per_batch=per_batch,
            seconds=summary["seconds"] + (time.time() - eval_started),
            converged=converged, dataset=self.cfg["network"]["dataset"], network=self.cfg["network"]["name"],
        )
        row["extra"] = {"lr_start": summary["lr_start"], "error": error, "best_epoch": summary.get("best_epoch")}
        return row, export_state(net)

    def _evaluate(self, net, loaders, seed):
        return {split: evaluate(net, loaders[split], self.loss_fn, self.metrics, self.device, seed)
                for split in ("val", "test")}

    # -- bookkeeping -----------------------------------------------------------------
    def _finish(self, step, row, state):
        row["prune_ratio"] = 1.0 - row["keep_ratio"]
        if not is_writer():  # under torchrun, rank 0 writes the run folder
            self.progress.update()
            return
        self.folder.finish(step, row, state)
        self.progress.update()
        status = "" if row["converged"] else "  (did not converge)"
        tqdm.write(f"[{step}] keep={row['keep_ratio']:.3f} params={row['params']} "
                   f"test_loss={row['test_loss']:.4f} nfe_f={row['nfe_forward']}{status}")
        self.write_outputs(plots=False)  # results as they happen: a long sweep can be watched

    def rows(self):
        return list(self.folder.read_records().values())

    def write_outputs(self, plots=True):
        """``results.csv`` and ``report.md`` (and the plots) from every finished step so far."""
        if not is_writer():
            return []
        rows = [{k: r.get(k, COLUMN_DEFAULTS.get(k)) for k in RESULT_COLUMNS} for r in self.rows()]
        write_results_csv(rows, self.folder.results_path)
        title = f"{self.cfg['network']['name']} on {self.cfg['network']['dataset']}"
        loss = self.training["loss"]
        write_report(rows, self.out_dir, title=title, loss_label=LOSS_LABELS.get(loss, f"test loss ({loss})"),
                     plots=plots, data_entropy=data_entropy(self.cfg, lambda: self.splits["test"]))
        return rows


def data_entropy(cfg, test_split):
    """``{dataset: (value, se)}``: the test data's own NLL where the test set has a true density
    (the toy density sets), the loss is in nats and no transform changes the data; else ``{}``.
    ``test_split()`` gives the test split, called only then (a large dataset is not loaded)."""
    training = cfg["training"]
    transforms = training["transformsTest"] + training["transformsFinal"]
    test_name = cfg["experiments"].get("datasetTest") or cfg["network"]["dataset"]
    if training["loss"] not in NATS_LOSSES or transforms or not getattr(DATASETS.get(test_name), "HAS_DENSITY", False):
        return {}
    return {cfg["network"]["dataset"]: test_split().reference_nll()}


def _jsonl_writer(path):
    """Rewrite ``path`` atomically with one JSON line per epoch record."""

    def write(history):
        save_text("".join(json.dumps(record) + "\n" for record in history), path)

    return write
