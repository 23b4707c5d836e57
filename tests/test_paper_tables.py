"""The supplement's tables as package data, and ``analyze paper``: a run beside its table."""
import csv
import glob
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, SHARED_DATA, one_error_line
from torchprune_flows.paper import TABLE_DIR, load_table, paper_tables, parse_number, table_for_dataset
from torchprune_flows.runner.commands import main as analyze

SUPPLEMENT = os.path.join(os.path.dirname(SHARED_DATA), "reference", "sparse-flows-supplement.txt")
WT, FT = "ThresNet", "FilterThresNet"


# -- the data files against the supplement's text ----------------------------------------
def supplement_tables():
    """``{"S4": [row cells], ...}`` parsed from the supplement text, independently of the CSVs."""
    if not os.path.isfile(SUPPLEMENT):
        pytest.skip(f"the supplement text is not at {SUPPLEMENT}")
    with open(SUPPLEMENT, encoding="utf-8") as handle:
        text = handle.read()
    parts = re.split(r"Table (S\d+):", text)
    tables = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        nll = re.findall(r"^\s*(\d+)% (\S+) (\S+) (\S+)\s*$", body, re.MULTILINE)
        hessian = re.findall(r"^(?:Unpruned FFJORD|Sparse Flows\(PR=(\d+)%\)) (\S+) (\S+) (\S+) (\S+)\s*$", body,
                             re.MULTILINE)
        if nll or hessian:
            tables[name] = nll or [(row[0] or "0",) + row[1:] for row in hessian]
    return tables


def test_every_table_matches_the_supplement_text():
    printed = supplement_tables()
    assert sorted(printed, key=lambda s: int(s[1:])) == list(paper_tables()) == [f"S{i}" for i in range(4, 13)]
    for table_id, cells in printed.items():
        table = load_table(table_id)
        assert len(table.rows) == len(cells), table_id
        for row, printed_row in zip(table.rows, cells):
            assert row["prune_ratio_percent"] == int(printed_row[0])
            if table.kind == "nll":
                _, params, unstructured, structured = printed_row
                assert row["parameters_text"] == params
                expected = {WT: unstructured, FT: structured}
            else:
                _, nll, lambda_max, trace, kappa = printed_row
                assert (row["lambda_max"], row["trace"]) == (float(lambda_max), float(trace))
                assert row["kappa_text"] == kappa
                expected = {FT: nll}
            for method, text in expected.items():
                value = row["nll"][method]
                assert (math.isnan(value) and text == "N/A") or value == float(text), (table_id, row, text)


def test_row_counts_and_spot_values():
    counts = {t.id: len(t.rows) for t in paper_tables().values()}
    assert counts == {"S4": 9, "S5": 9, "S6": 13, "S7": 17, "S8": 9, "S9": 10, "S10": 13, "S11": 7, "S12": 7}
    s7 = load_table("S7")
    assert (s7.rows[-1]["prune_ratio"], s7.rows[-1]["nll"][FT], s7.rows[-1]["parameters"]) == (0.99, 39.01, 9130.0)
    s8 = load_table("s8")  # the printed header says POWER; it is BSDS300
    assert (s8.dataset, s8.rows[0]["parameters"], s8.rows[0]["nll"][WT]) == ("Bsds300", 6.70e6, -128.32)
    s10 = load_table("S10")
    assert [r["prune_ratio_percent"] for r in s10.rows if math.isnan(r["nll"][FT])] == [71, 77, 82, 86, 89, 92, 94, 95]
    s11 = table_for_dataset("ToyGaussians")
    assert s11.id == "S11" and s11.methods == (FT,) and s11.unit == "nats"
    assert s11.rows[2]["trace"] == 0.560 and s11.rows[0]["kappa"] == 48200.0  # 0.560 as printed
    assert load_table("S9").unit == "bits/dim"
    assert table_for_dataset("ToySpirals2") is None
    with pytest.raises(KeyError, match="S4, S5"):
        load_table("S13")
    assert (parse_number("0.58k"), parse_number("N/A") != parse_number("N/A")) == (580.0, True)


def test_each_table_names_the_network_of_its_shipped_config():
    for table in paper_tables().values():
        with open(os.path.join(REPO_ROOT, table.config)) as handle:
            network = yaml.safe_load(handle)["network"]
        assert (network["name"], network["dataset"]) == (table.network, table.dataset)


def test_setup_ships_every_table_file():
    """The package_data patterns of setup.py match every file of the tables folder."""
    with open(os.path.join(REPO_ROOT, "setup.py")) as handle:
        text = handle.read()
    patterns = re.search(r'"torchprune_flows\.paper":\s*\[([^\]]*)\]', text).group(1)
    package = os.path.dirname(TABLE_DIR)
    shipped = {os.path.relpath(p, package) for pattern in re.findall(r'"([^"]+)"', patterns)
               for p in glob.glob(os.path.join(package, pattern))}
    assert shipped == {os.path.relpath(p, package) for p in glob.glob(os.path.join(TABLE_DIR, "*"))}
    assert len(shipped) == 10


# -- analyze paper on tiny runs ----------------------------------------------------------
def records(run_dir):
    rows = []
    for path in glob.glob(os.path.join(run_dir, "steps", "*.json")):
        with open(path) as handle:
            rows.append(json.load(handle))
    return rows


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def copy_run(run_dir, tmp_path, dataset=None):
    """A writable copy of a run folder, its config relabelled to ``dataset`` if given."""
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    if dataset:
        with open(os.path.join(copy, "config.yaml")) as handle:
            cfg = yaml.safe_load(handle)
        cfg["network"]["dataset"] = dataset
        with open(os.path.join(copy, "config.yaml"), "w") as handle:
            yaml.safe_dump(cfg, handle, sort_keys=False)
    return copy


def test_one_net_gaussians_run_beside_table_s11(cascade_run, tmp_path):
    _, out, rc = cascade_run
    assert rc == 0
    run = copy_run(out, tmp_path)
    with open(os.path.join(run, "report.md")) as handle:
        before = handle.read()
    assert analyze(["paper", run]) == 0
    rows = read_csv(os.path.join(run, "analysis", "paper.csv"))
    steps = records(run)
    ours = {0.0: next(r for r in steps if r["method"] == "ReferenceNet")}
    ours.update({round(1 - r["keep_ratio"], 8): r for r in steps if r["method"] == FT})
    assert sorted(ours) == [0.0, 0.4, 0.7]
    assert len(rows) == 7 and {r["method"] for r in rows} == {FT}  # S11 reports FT only
    for row in rows:
        paper_ratio = float(row["paper_prune_ratio"])
        nearest = min(ours, key=lambda r: abs(r - paper_ratio))
        assert float(row["ours_prune_ratio"]) == pytest.approx(nearest)
        assert float(row["ours_nll"]) == ours[nearest]["test_loss"]
        assert float(row["ours_se"]) == ours[nearest]["test_loss_se"] and row["se_kind"] == "test-set"
    assert [float(r["ours_prune_ratio"]) for r in rows] == pytest.approx([0, 0.4, 0.7, 0.7, 0.7, 0.7, 0.7])
    table = open(os.path.join(run, "analysis", "paper.md")).read()
    assert "| Sparse Flows(PR=25%) | 25 | 1.157 |" in table
    assert "‡: no finished step within 1.5 points" in table
    assert "†: one base net, ± its standard error over the test samples" in table
    assert "λmax: ours" not in table and "no Hessian analysis" in table  # the paper's columns only
    assert "Not in Table S11: WT" in table
    # the figure draws every finished FT step of ours and the paper's seven rows
    assert os.path.getsize(os.path.join(run, "analysis", "paper.png")) > 0
    from torchprune_flows.paper import table_for_dataset
    from torchprune_flows.runner.commands.paper import figure_series
    from torchprune_flows.runner.runs import RunFolder
    series = figure_series(table_for_dataset("ToyGaussians"), RunFolder.open(run).steps, [FT])
    ours_line = next(v for k, v in series.items() if k.startswith("ours"))
    assert [x for x, _, _ in ours_line] == pytest.approx([100.0 * r for r in sorted(ours)])
    assert [y for _, y, _ in ours_line] == [ours[r]["test_loss"] for r in sorted(ours)]
    paper_line = next(v for k, v in series.items() if k.startswith("paper"))
    assert [y for _, y, _ in paper_line] == [1.173, 1.157, 1.148, 1.120, 1.136, 1.173, 1.244]

    assert analyze(["paper", run]) == 0  # a rerun replaces the section
    with open(os.path.join(run, "report.md")) as handle:
        report = handle.read()
    assert report.count("## Paper side by side") == 1 and report.count("paper-side-by-side: end") == 1
    assert report.startswith(before.rstrip("\n"))
    assert "| Sparse Flows(PR=96%) | 96 | 1.244 |" in report


def test_hessian_columns_come_from_the_hessian_analysis(cascade_run, tmp_path):
    _, out, _ = cascade_run
    run = copy_run(out, tmp_path)
    assert analyze(["hessian", run, "--methods", "FT", "--keep", "0.3", "--samples", "16", "--probes", "2",
                    "--iters", "3", "--slq-probes", "1"]) == 0
    hessian = {(r["method"], round(float(r["prune_ratio"]), 8)): r
               for r in read_csv(os.path.join(run, "analysis", "hessian.csv"))}
    assert sorted(hessian) == [(FT, 0.7), ("ReferenceNet", 0.0)]
    assert analyze(["paper", run]) == 0
    rows = read_csv(os.path.join(run, "analysis", "paper.csv"))
    by_ratio = {float(r["paper_prune_ratio"]): r for r in rows}
    assert float(by_ratio[0.0]["ours_lambda_max"]) == float(hessian[("ReferenceNet", 0.0)]["lambda_max"])
    assert float(by_ratio[0.67]["ours_trace"]) == float(hessian[(FT, 0.7)]["trace"])
    assert by_ratio[0.25]["ours_lambda_max"] == ""  # PR 40 % was not analysed
    table = open(os.path.join(run, "analysis", "paper.md")).read()
    lambda_67 = float(hessian[(FT, 0.7)]["lambda_max"])
    assert f"| 0.0090 | {lambda_67:.4g} | 0.560 |" in table
    assert re.search(r"\| 0\.0110 \| – \| 0\.076 \| – \|", table)


@pytest.fixture(scope="module")
def two_net_run(tmp_path_factory, tiny_experiment_class, torch_single_thread):
    """Two base nets, WT and FT at keep 0.3, one epoch each."""
    exp = tiny_experiment_class(tmp_path_factory.mktemp("two_nets"))
    exp.cfg["experiments"].update(numNets=2, spacing=[{"type": "manual", "values": [0.3]}])
    exp.cfg["training"]["numEpochs"] = 1
    assert exp.run() == 0
    return exp.path("out")


def test_standard_error_over_nets_and_both_methods(two_net_run, tmp_path):
    """Relabelled as MINIBOONE (Table S7: WT and FT): mean ± sample std / sqrt(n) over the 2 nets."""
    run = copy_run(two_net_run, tmp_path, dataset="Miniboone")
    assert analyze(["paper", run]) == 0
    rows = read_csv(os.path.join(run, "analysis", "paper.csv"))
    assert len(rows) == 2 * 17
    steps = records(run)
    for method in (WT, FT):
        losses = [r["test_loss"] for r in steps if r["method"] == method]
        assert len(losses) == 2
        for row in (r for r in rows if r["method"] == method and float(r["paper_prune_ratio"]) > 0.35):
            assert float(row["ours_prune_ratio"]) == pytest.approx(0.7)
            assert float(row["ours_nll"]) == pytest.approx(np.mean(losses), rel=1e-12)
            assert float(row["ours_se"]) == pytest.approx(abs(losses[0] - losses[1]) / 2, rel=1e-9)
            assert row["se_kind"] == "nets" and row["nets_converged"] == "2"
    reference = [r["test_loss"] for r in steps if r["method"] == "ReferenceNet"]
    first = next(r for r in rows if r["method"] == WT and r["paper_prune_ratio"] == "0.0")
    assert float(first["ours_se"]) == pytest.approx(np.std(reference, ddof=1) / math.sqrt(2), rel=1e-9)
    table = open(os.path.join(run, "analysis", "paper.md")).read()
    assert "| Prune ratio (%) | Parameters | WT: paper | WT: ours | WT: ours at PR % (params) | FT: paper |" in table
    assert "| 99 | 9.13K | 13.61 |" in table and "sample std / √n" in table and "†" not in table
    assert "the paper's network for this table is `ffjord_l2_hm20_f1_softplus`" in table


@pytest.mark.parametrize("dataset", ["ToySpirals2", "ToyMoons"])
def test_a_dataset_without_a_table_is_one_error_line(cascade_run, tmp_path, capsys, dataset):
    _, out, _ = cascade_run
    run = copy_run(out, tmp_path, dataset=dataset)
    with open(os.path.join(run, "report.md")) as handle:
        before = handle.read()
    assert analyze(["paper", run]) == 2
    one_error_line(capsys, dataset, "ToyGaussians (S11)", "Power (S4)", "CIFAR10 (S10)")
    assert not os.path.exists(os.path.join(run, "analysis", "paper.md"))
    with open(os.path.join(run, "report.md")) as handle:
        assert handle.read() == before


def test_figure_draws_the_dense_control_at_the_prune_ratio_of_its_cycle():
    from torchprune_flows.paper import table_for_dataset
    from torchprune_flows.runner.commands.paper import figure_series

    def row(method, keep, cycle, loss, se=0.01):
        return dict(method=method, keep_ratio=keep, prune_ratio=1 - keep, cycle=cycle, repetition=0, net=0,
                    test_loss=loss, test_loss_se=se, converged=True, params=10)
    steps = {i: r for i, r in enumerate([
        row("ReferenceNet", 1.0, 0, 1.30), row(FT, 0.8, 1, 1.20), row(FT, 0.5, 2, 1.25),
        row("DenseControl", 1.0, 1, 1.28), row("DenseControl", 1.0, 2, 1.27), row("DenseControl", 1.0, 3, 1.26)])}
    series = figure_series(table_for_dataset("ToyGaussians"), steps, [FT])
    control = next(v for k, v in series.items() if k.startswith("DenseControl"))
    # cycle 3 has no FT step yet: not drawn; cycles 1 and 2 at FT's 20 % and 50 %
    assert [c[0] for c in control] == pytest.approx([20.0, 50.0])
    assert [c[1:] for c in control] == [(1.28, 0.01), (1.27, 0.01)]
