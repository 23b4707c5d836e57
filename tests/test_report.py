"""Tests for the results table (runner.results: CSV storage, summary) and its rendering (runner.render)."""

import math
import os

import numpy as np
import pytest

from torchprune_flows.runner.render import write_report
from torchprune_flows.runner.results import (
    RESULT_COLUMNS,
    format_mean_std,
    format_param_count,
    read_results_csv,
    summarize,
    write_results_csv,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEEP_RATIOS = [1.0 - 0.3, 1.0 - 0.6, 1.0 - 0.9]  # deliberately inexact floats
METHODS = ["ThresNet", "FilterThresNet"]
PARAMS_ORIGINAL = 43325


def _row(net, method, keep, test_loss, converged=True, nfe=(20, 30.5), cycle=None):
    """One result row with plausible values (``cycle``: default the keep ratio's position)."""
    return {
        "net": net,
        "repetition": 0,
        "method": method,
        "keep_ratio": keep,
        "prune_ratio": 1.0 - keep,
        "cycle": (KEEP_RATIOS.index(keep) + 1 if keep in KEEP_RATIOS else 0) if cycle is None else cycle,
        "params": int(round(PARAMS_ORIGINAL * keep)),
        "params_original": PARAMS_ORIGINAL,
        "test_loss": test_loss,
        "test_loss_se": 0.0123,
        "test_metric": test_loss / 3.0,
        "test_metric2": float("nan"),
        "val_loss": test_loss + 0.0123456789,
        "nfe_forward": nfe[0],
        "nfe_backward": nfe[1],
        "epochs": 50,
        "seconds": 12.345678901234567,
        "flops": 0.5 * keep,
        "seconds_per_batch": 0.25,
        "converged": converged,
        "dataset": "gaussians",
        "network": "ffjord_multiscale",
        "estimator": "exact divergence",
    }


def _loss(net, method_idx, ratio_idx):
    """Deterministic but irregular test loss."""
    return -3.0 + 0.1 * ratio_idx + 0.037 * net + 0.011 * method_idx + 1e-9 / 3


def _is_failed(net, method, ratio_idx):
    """FilterThresNet at 90 % fails for both nets; ThresNet at 90 % for net 0."""
    if ratio_idx != 2:
        return False
    return method == "FilterThresNet" or net == 0


@pytest.fixture
def rows():
    """2 nets x (ReferenceNet + 2 methods x 3 keep ratios)."""
    result = []
    for net in range(2):
        result.append(_row(net, "ReferenceNet", 1.0, _loss(net, 0, -1), nfe=(14, 22)))
        for m_idx, method in enumerate(METHODS):
            for r_idx, keep in enumerate(KEEP_RATIOS):
                if _is_failed(net, method, r_idx):
                    result.append(_row(net, method, keep, float("nan"), False, (1000.0, 2000.0)))
                else:
                    result.append(_row(net, method, keep, _loss(net, m_idx, r_idx),
                                       nfe=(20 + r_idx, 30.5 + net)))
    return result


def _same(a, b):
    """Equality that treats NaN == NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _expected_loss_stats(rows, method, keep):
    """Mean/std of converged test losses, computed with numpy directly."""
    losses = np.array([r["test_loss"] for r in rows
                       if r["method"] == method and r["keep_ratio"] == keep and r["converged"]])
    return losses.mean(), losses.std()


# ---------------------------------------------------------------- CSV
def test_csv_round_trip(rows, tmp_path):
    path = tmp_path / "sub" / "results.csv"
    write_results_csv(rows, str(path))
    with open(path) as handle:
        assert handle.readline().strip() == ",".join(RESULT_COLUMNS)
    back = read_results_csv(str(path))
    assert len(back) == len(rows)
    assert [f for f in os.listdir(path.parent)] == ["results.csv"]  # no tmp left

    def key(r):
        return r["net"], r["repetition"], r["method"], -r["keep_ratio"]
    assert [key(r) for r in back] == sorted(key(r) for r in rows)
    for got, want in zip(back, sorted(rows, key=key)):
        assert list(got) == RESULT_COLUMNS
        for column in RESULT_COLUMNS:
            assert _same(got[column], want[column]), column
            assert type(got[column]) is type(want[column]), column


def test_csv_types(rows, tmp_path):
    path = str(tmp_path / "results.csv")
    write_results_csv(rows, path)
    row = read_results_csv(path)[0]
    assert isinstance(row["net"], int) and isinstance(row["epochs"], int)
    assert isinstance(row["keep_ratio"], float)
    assert isinstance(row["params"], int)
    assert isinstance(row["converged"], bool)
    assert isinstance(row["dataset"], str)


def test_csv_rejects_bad_rows(rows, tmp_path):
    bad = dict(rows[0])
    del bad["test_loss"]
    with pytest.raises(ValueError):
        write_results_csv([bad], str(tmp_path / "x.csv"))
    assert not os.path.exists(tmp_path / "x.csv")


# ---------------------------------------------------------------- summary
def test_summary_matches_numpy(rows):
    summary = summarize(rows)
    assert len(summary) == 1 + len(METHODS) * len(KEEP_RATIOS)
    by_key = {(s["method"], s["keep_ratio"]): s for s in summary}
    for method in METHODS:
        for r_idx, keep in enumerate(KEEP_RATIOS):
            entry = by_key[(method, round(keep, 8))]
            assert entry["n_total"] == 2
            assert entry["prune_ratio"] == pytest.approx(1.0 - keep)
            n_ok = sum(not _is_failed(n, method, r_idx) for n in range(2))
            assert entry["n_converged"] == n_ok
            if n_ok == 0:
                assert math.isnan(entry["test_loss_mean"])
                continue
            mean, std = _expected_loss_stats(rows, method, keep)
            assert entry["test_loss_mean"] == pytest.approx(mean, abs=1e-12)
            assert entry["test_loss_std"] == pytest.approx(std, abs=1e-12)
            params = np.mean([r["params"] for r in rows
                              if r["method"] == method and r["keep_ratio"] == keep])
            assert entry["params_mean"] == pytest.approx(params)
    wt_90 = by_key[("ThresNet", round(KEEP_RATIOS[2], 8))]
    assert wt_90["nfe_forward_mean"] == 22 and wt_90["nfe_backward_mean"] == 31.5
    assert math.isnan(by_key[("FilterThresNet", round(KEEP_RATIOS[2], 8))]["nfe_forward_mean"])
    ref = by_key[("ReferenceNet", 1.0)]
    assert ref["nfe_forward_mean"] == 14 and ref["nfe_backward_mean"] == 22
    assert ref["test_loss_std"] == pytest.approx(np.std([_loss(0, 0, -1), _loss(1, 0, -1)]))


# ---------------------------------------------------------------- formatting
@pytest.mark.parametrize("count, text", [
    (642, "642"), (43325, "43.3K"), (820613, "821K"), (6698666, "6.70M"),
    (999, "999"), (999999, "1.00M"), (1000, "1.00K"), (float("nan"), "N/A"),
])
def test_format_param_count(count, text):
    assert format_param_count(count) == text


def test_format_mean_std():
    assert format_mean_std(-3.3712, 0.0) == "-3.37 ± 0.00"
    assert format_mean_std(0.81234, 0.0041) == "0.812 ± 0.004"
    assert format_mean_std(float("nan"), float("nan")) == "N/A"
    assert format_mean_std(-3.3712, 0.0, count=1) == "-3.37"
    assert format_mean_std(-3.3712, 0.5, count=2) == "-3.37 ± 0.50"


# ---------------------------------------------------------------- report
def test_report_markdown(rows, tmp_path):
    paths = write_report(rows, str(tmp_path), title="My title")
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert paths[0] == str(tmp_path / "report.md")
    assert report.startswith("# My title")
    assert "Prune ratio (%)" in report and "Number of parameters" in report

    table = [l for l in report.splitlines() if l.startswith("| ")]
    header = table[0]
    columns = [cell.strip() for cell in header.strip("| ").split("|")]
    assert columns[:2] == ["Prune ratio (%)", "Number of parameters"] and sorted(columns[2:]) == sorted(METHODS)

    ref_mean, ref_std = _expected_loss_stats(rows, "ReferenceNet", 1.0)
    ref_cell = f"{ref_mean:.2f} ± {ref_std:.2f}"
    zero_row = next(l for l in table if l.startswith("| 0 |"))
    assert zero_row.count(ref_cell) == 2  # shown under both methods
    assert "| 43.3K |" in zero_row

    for keep in KEEP_RATIOS[:2]:  # every method's loss in its own column of its prune ratio's row
        row = next(l for l in table if l.startswith(f"| {round(100 * (1 - keep))} |"))
        cells = [cell.strip() for cell in row.strip("| ").split("|")]
        for method in METHODS:
            mean, std = _expected_loss_stats(rows, method, keep)
            assert cells[columns.index(method)] == f"{mean:.2f} ± {std:.2f}"

    row_90 = next(l for l in table if l.startswith("| 90 |"))
    wt_mean, _ = _expected_loss_stats(rows, "ThresNet", KEEP_RATIOS[2])
    # one converged net: not a misleading "± 0.00" over one run, but ± its own standard error
    assert f"| {wt_mean:.2f} ± 0.01 |" in row_90
    assert "N/A" in row_90  # FilterThresNet: no converged run
    assert "| 4.33K |" in row_90

    ratios = [l.split("|")[1].strip() for l in table[:5] if l[2].isdigit()]
    assert ratios == ["0", "30", "60", "90"]
    assert "3 of 14 runs did not converge" in report
    assert "NFE-F" in report and "14.0 / 22.0" in report
    nfe_90 = [l for l in table if l.startswith("| 90 |")][1]
    assert nfe_90 == "| 90 | N/A | 22.0 / 31.5 |"  # diverged NFEs (1000) excluded


def test_report_plots(rows, tmp_path):
    paths = write_report(rows, str(tmp_path))
    plots = [tmp_path / "plots" / "gaussians_loss.png", tmp_path / "plots" / "gaussians_nfe.png"]
    assert [str(p) for p in plots] == paths[1:]
    for plot in plots:
        assert plot.stat().st_size > 0
        with open(plot, "rb") as handle:
            assert handle.read(8) == PNG_SIGNATURE


def test_report_empty_raises(tmp_path):
    with pytest.raises(ValueError):
        write_report([], str(tmp_path))
