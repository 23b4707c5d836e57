"""NFE in the results, and ``python -m experiment.analyze cost`` on runs and pytest-benchmark JSON."""
import json
import math
import os
import shutil

import pytest

from conftest import one_error_line
from torchprune_flows.runner.commands.cost import format_ms, format_nfe, format_percent
from torchprune_flows.runner.commands import main
from torchprune_flows.runner.results import read_results_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE, path
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def table_rows(text):
    """Cells of every markdown table row (header and separator lines included)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def read_log(out, step):
    with open(os.path.join(out, "logs", step + ".jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


# -- NFE in the run's results and logs ---------------------------------------------------------


def test_nfe_columns_are_positive_for_every_converged_row(cascade_run):
    _, out, rc = cascade_run
    assert rc == 0
    rows = read_results_csv(os.path.join(out, "results.csv"))
    converged = [r for r in rows if r["converged"] and math.isfinite(r["test_loss"])]
    assert len(converged) == len(rows) == 5  # ReferenceNet + WT, FT at two keep ratios
    for row in converged:
        assert row["nfe_forward"] > 0 and row["nfe_backward"] > 0, row


def test_epoch_records_hold_batches_and_seconds(cascade_run):
    _, out, _ = cascade_run
    for name in sorted(os.listdir(os.path.join(out, "logs"))):
        for record in read_log(out, name[:-len(".jsonl")]):
            assert record["batches"] > 0
            assert record["seconds"] > 0
            assert record["nfe_forward"] > 0 and record["nfe_backward"] > 0


# -- the report on a run -----------------------------------------------------------------------


def test_cost_report_on_a_run(cascade_run, tmp_path):
    _, out, _ = cascade_run
    report_dir = str(tmp_path / "report")
    assert main(["cost", out, "--out", report_dir]) == 0
    with open(os.path.join(report_dir, "cost.md")) as handle:
        text = handle.read()
    rows = {(r[0], r[1]): r for r in table_rows(text)}
    header = table_rows(text)[0]
    results = read_results_csv(os.path.join(out, "results.csv"))
    for result in results:
        cells = dict(zip(header, rows[(result["method"], format_percent(result["prune_ratio"]))]))
        assert cells["NFE-F (test)"] == format_nfe(result["nfe_forward"])
        assert cells["NFE-B"] == format_nfe(result["nfe_backward"])
    # time per training batch of the ReferenceNet: its epochs' seconds over their batches
    records = read_log(out, "net0_ReferenceNet")
    expected = sum(r["seconds"] for r in records) / sum(r["batches"] for r in records)
    assert dict(zip(header, rows[("ReferenceNet", "0")]))["time / train batch (ms)"] == format_ms(expected)
    pngs = [name for name in os.listdir(report_dir) if name.endswith(".png")]
    assert pngs == ["cost_run_ToyGaussians.png"] and f"]({pngs[0]})" in text
    assert_png(os.path.join(report_dir, pngs[0]))
    assert not [name for name in os.listdir(report_dir) if name.startswith(".tmp")]


def test_a_folder_of_runs_defaults_to_its_analysis_folder(cascade_run, tmp_path):
    _, out, _ = cascade_run
    sweep = tmp_path / "sweep"
    for name in ("network.name=a", "network.name=b"):
        shutil.copytree(out, sweep / name, ignore=shutil.ignore_patterns("checkpoints", "analysis"))
    assert main(["cost", str(sweep)]) == 0
    with open(sweep / "analysis" / "cost.md") as handle:
        text = handle.read()
    assert "### Run `network.name=a`" in text and "### Run `network.name=b`" in text
    assert_png(sweep / "analysis" / "cost_run_ToyGaussians.png")


# -- the report on pytest-benchmark JSON ---------------------------------------------------------


def _case(group, solver_method, gradient, method, keep, mean, stddev, nfe_f, nfe_b, rounds=3, memory=None):
    """One entry as pytest-benchmark writes it (the fields the report reads, and a few more)."""
    name = f"test_toy_forward_backward[{group}-{solver_method}-{gradient}-{method}-{keep}]"
    return {
        "group": f"toy: {group}", "name": name, "fullname": f"benchmarks/test_toy_cost.py::{name}",
        "params": {"method": method, "keep": keep}, "param": f"{method}-{keep}",
        "extra_info": {"solver_method": solver_method, "gradient": gradient, "backend": "torchdiffeq",
                       "atol": 1e-5, "rtol": 1e-5, "step_size": None, "family": "toy",
                       "network": "ffjord_l2_h128_sigmoid", "solver": f"{solver_method}-{gradient}",
                       "method": method, "keep_target": keep, "keep_ratio": keep, "nfe_forward": nfe_f,
                       "nfe_backward": nfe_b, "params": int(642 * keep), "batch": 1024,
                       **({} if memory is None else {"peak_memory_mib": memory})},
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5, "max_time": 1.0,
                    "min_time": 5e-06, "warmup": False},
        "stats": {"min": mean - stddev, "max": mean + stddev, "mean": mean, "stddev": stddev, "rounds": rounds,
                  "median": mean, "iqr": stddev, "q1": mean - stddev, "q3": mean + stddev, "iqr_outliers": 0,
                  "stddev_outliers": 1, "outliers": "1;0", "ld15iqr": mean - stddev, "hd15iqr": mean + stddev,
                  "ops": 1.0 / mean, "total": mean * rounds, "iterations": 1},
    }


def write_benchmark_json(path, cases):
    data = {"machine_info": {"node": "test", "cpu": {"count": 2}}, "commit_info": {},
            "benchmarks": cases, "datetime": "2024-01-01T00:00:00", "version": "5.2.3"}
    with open(path, "w") as handle:
        json.dump(data, handle)
    return str(path)


BENCH_CASES = [
    _case("solver", "dopri5", "adjoint", "dense", 1.0, 0.1234, 0.0042, 44, 26, memory=2.194),
    _case("solver", "dopri5", "adjoint", "WT", 0.5, 0.2081, 0.011, 50, 44),
    _case("solver", "dopri5", "adjoint", "FT", 0.5, 0.2163, 0.005, 50, 44),
    _case("solver", "rk4", "adjoint", "dense", 1.0, 0.0456, 0.0012, 80, 80),
    _case("solver", "rk4", "adjoint", "FT", 0.5, 0.0471, 0.0009, 80, 80),
    _case("gradient", "dopri5", "seminorm", "dense", 1.0, 1.5, 0.2, 44, 20, rounds=1),
]


def test_cost_report_on_benchmark_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bench = write_benchmark_json(tmp_path / "bench.json", BENCH_CASES)
    assert main(["cost", "--benchmark", bench]) == 0
    report_dir = tmp_path / "cost_report"  # the default for benchmark files alone
    text = (report_dir / "cost.md").read_text()
    rows = table_rows(text)
    header = rows[0]
    cells = {(r[0], r[1], r[2]): dict(zip(header, r)) for r in rows if r[0] != header[0] and not r[0].startswith("---")}
    dense = cells[("dopri5 / adjoint / torchdiffeq", "dense", "1.000")]
    assert (dense["NFE-F"], dense["NFE-B"], dense["time / batch (ms)"]) == ("44", "26", "123 ± 4")
    assert dense["peak memory (MiB)"] == "2.2"
    wt = cells[("dopri5 / adjoint / torchdiffeq", "WT", "0.500")]
    assert (wt["Prune ratio (%)"], wt["NFE-B"], wt["time / batch (ms)"]) == ("50", "44", "208 ± 11")
    assert wt["peak memory (MiB)"] == "N/A"  # a file written before the field existed
    assert cells[("rk4 / adjoint / torchdiffeq", "FT", "0.500")]["time / batch (ms)"] == "47.1 ± 0.9"
    assert cells[("dopri5 / seminorm / torchdiffeq", "dense", "1.000")]["time / batch (ms)"] == "1500"  # 1 round
    assert "#### toy: solver" in text and "#### toy: gradient" in text
    pngs = sorted(name for name in os.listdir(report_dir) if name.endswith(".png"))
    assert pngs == ["cost_bench0_toy_gradient.png", "cost_bench0_toy_solver.png"]
    for name in pngs:
        assert f"]({name})" in text
        assert_png(report_dir / name)


def test_runs_and_benchmarks_in_one_report(cascade_run, tmp_path):
    _, out, _ = cascade_run
    bench = write_benchmark_json(tmp_path / "bench.json", BENCH_CASES[:2])
    assert main(["cost", out, "--benchmark", bench, "--out", str(tmp_path / "both")]) == 0
    text = (tmp_path / "both" / "cost.md").read_text()
    assert "## Experiment runs" in text and "## Benchmarks" in text


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (None, "at least one RUN_DIR"),
    ("missing", "does not exist"),
    ("{not json", "is not a JSON file"),
    ('{"machine_info": {}}', "no 'benchmarks' list"),
    ('{"benchmarks": [{"name": "x", "stats": {"mean": 1.0}, "extra_info": {}}]}', "no benchmark case with nfe"),
], ids=["nothing", "missing-file", "not-json", "no-benchmarks", "no-nfe"])
def test_bad_benchmark_input_is_one_error_line(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    argv = ["cost"]
    if content is not None:
        path = tmp_path / "bench.json"
        if content != "missing":
            path.write_text(content)
        argv += ["--benchmark", str(path)]
    assert main(argv) == 2
    assert message in one_error_line(capsys)
    assert not os.path.exists(tmp_path / "cost_report")


def test_a_folder_without_results_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "nowhere"):
        assert main(["cost", str(folder)]) == 2
        assert str(folder) in one_error_line(capsys)
    assert not os.path.exists(tmp_path / "empty" / "analysis")
