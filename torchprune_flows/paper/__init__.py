"""The paper's results as data: supplement Tables S4-S12 of Sparse Flows (NeurIPS 2021).

The CSV files in ``tables/`` are the tables as printed (``tables/README.md`` names the source and
what is printed oddly); this module reads them into :class:`PaperTable` objects whose rows hold
numbers: prune ratios as fractions, parameter counts and κ parsed from ``43.3K`` / ``48.2k``,
"N/A" (did not converge) as NaN, and the NLL per method under our method names.
"""
import csv
import math
import os
from dataclasses import dataclass
from functools import lru_cache

TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables")

#: the paper's "unstructured" and "structured" pruning under our method names (WT, FT)
UNSTRUCTURED, STRUCTURED = "ThresNet", "FilterThresNet"


@dataclass(frozen=True)
class PaperTable:
    """One supplement table: ``rows`` are dicts (see :func:`load_table`)."""

    id: str
    file: str
    dataset: str  # our dataset name
    unit: str  # of the NLL: "nats" or "bits/dim"
    kind: str  # "nll" (S4-S10: WT and FT per prune ratio) or "hessian" (S11-S12: FT with λmax, trace, κ)
    config: str  # our shipped config of the paper's setting
    network: str  # its network
    caption: str
    rows: tuple

    @property
    def methods(self):
        """Our names of the methods the table reports (its NLL columns)."""
        return (UNSTRUCTURED, STRUCTURED) if self.kind == "nll" else (STRUCTURED,)


#: (id, file, dataset, unit, kind, config, network, caption)
_SPECS = [
    ("S4", "s04_power.csv", "Power", "nats", "nll", "experiment_configs/ffjord/power.yaml", "ffjord_l3_hm10_f5_tanh",
     "Negative test log-likelihood (NLL) in nats on POWER"),
    ("S5", "s05_gas.csv", "Gas", "nats", "nll", "experiment_configs/ffjord/gas.yaml", "ffjord_l3_hm20_f5_tanh",
     "Negative test log-likelihood (NLL) in nats on GAS"),
    ("S6", "s06_hepmass.csv", "Hepmass", "nats", "nll", "experiment_configs/ffjord/hepmass.yaml",
     "ffjord_l2_hm10_f10_softplus", "Negative test log-likelihood (NLL) in nats on HEPMASS"),
    ("S7", "s07_miniboone.csv", "Miniboone", "nats", "nll", "experiment_configs/ffjord/miniboone.yaml",
     "ffjord_l2_hm20_f1_softplus", "Negative test log-likelihood (NLL) in nats on MINIBOONE"),
    ("S8", "s08_bsds300.csv", "Bsds300", "nats", "nll", "experiment_configs/ffjord/bsds300.yaml",
     "ffjord_l3_hm20_f2_softplus", "Negative test log-likelihood (NLL) in nats on BSDS300"),
    ("S9", "s09_mnist.csv", "MNIST", "bits/dim", "nll", "experiment_configs/ffjord/mnist.yaml",
     "ffjord_multiscale_mnist", "Negative test log-likelihood (NLL) in bits/dim on MNIST"),
    ("S10", "s10_cifar10.csv", "CIFAR10", "bits/dim", "nll", "experiment_configs/ffjord/cifar10.yaml",
     "ffjord_multiscale_cifar", "Negative test log-likelihood (NLL) in bits/dim on CIFAR10"),
    ("S11", "s11_gaussians.csv", "ToyGaussians", "nats", "hessian", "experiment_configs/ffjord/gaussians.yaml",
     "ffjord_l2_h128_sigmoid_da", "Gaussians - Hessian Analysis (Structured Pruning)"),
    ("S12", "s12_gaussians_spiral.csv", "ToyGaussiansSpiral", "nats", "hessian",
     "experiment_configs/ffjord/gaussiansspiral.yaml", "ffjord_l4_h64_sigmoid_da",
     "Gaussians-Spiral - Hessian Analysis (Structured Pruning)"),
]

_SUFFIXES = {"k": 1e3, "m": 1e6}


def parse_number(text):
    """A printed number: ``-0.34``, ``43.3K``, ``6.70M``, ``48.2k``; ``N/A`` is NaN."""
    text = text.strip()
    if text.upper() == "N/A":
        return math.nan
    scale = _SUFFIXES.get(text[-1].lower())
    return float(text[:-1]) * scale if scale else float(text)


def _nll_row(cells):
    percent = int(cells["prune_ratio_percent"])
    return {"prune_ratio_percent": percent, "prune_ratio": percent / 100,
            "parameters": parse_number(cells["parameters"]), "parameters_text": cells["parameters"],
            "nll": {UNSTRUCTURED: parse_number(cells["unstructured"]), STRUCTURED: parse_number(cells["structured"])}}


def _hessian_row(cells):
    percent = int(cells["prune_ratio_percent"])
    return {"model": cells["model"], "prune_ratio_percent": percent, "prune_ratio": percent / 100,
            "nll": {STRUCTURED: parse_number(cells["nll"])}, "lambda_max": parse_number(cells["lambda_max"]),
            "trace": parse_number(cells["trace"]), "kappa": parse_number(cells["kappa"]), "kappa_text": cells["kappa"]}


@lru_cache(maxsize=None)
def paper_tables():
    """``{id: PaperTable}`` of Tables S4-S12, in order."""
    tables = {}
    for table_id, name, dataset, unit, kind, config, network, caption in _SPECS:
        with open(os.path.join(TABLE_DIR, name), newline="", encoding="utf-8") as handle:
            parse = _nll_row if kind == "nll" else _hessian_row
            rows = tuple(parse(cells) for cells in csv.DictReader(handle))
        tables[table_id] = PaperTable(table_id, name, dataset, unit, kind, config, network, caption, rows)
    return tables


def load_table(table_id):
    """Table ``"S4"`` ... ``"S12"``; its rows, by increasing prune ratio, are dicts with
    ``prune_ratio`` (a fraction), ``prune_ratio_percent`` and ``nll`` (``{method: value}``; NaN:
    did not converge), plus ``parameters`` / ``parameters_text`` (S4-S10) or ``model``,
    ``lambda_max``, ``trace``, ``kappa`` / ``kappa_text`` (S11-S12)."""
    tables = paper_tables()
    key = str(table_id).upper()
    key = key if key.startswith("S") else "S" + key
    if key not in tables:
        raise KeyError(f"no supplement table {table_id!r}; there are {', '.join(tables)}")
    return tables[key]


def table_for_dataset(dataset):
    """The table of our dataset ``dataset`` (e.g. ``"ToyGaussians"`` -> S11), or None."""
    return next((t for t in paper_tables().values() if t.dataset == dataset), None)

__all__ = ["TABLE_DIR", "PaperTable", "load_table", "paper_tables", "parse_number", "table_for_dataset"]
