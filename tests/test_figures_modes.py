"""Mode coverage (``torchprune_flows.analysis.modes``) and the ``figure`` / ``modes`` analyses."""
import csv
import math
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import one_error_line
from torchprune_flows.runner.commands import main
from torchprune_flows.analysis.modes import gaussian_mass_within, mode_coverage, standardized_distances
from torchprune_flows.data.toy import ToyGaussians, ToyGaussiansSpiral

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def mixture_samples(centers, stds, per_mode, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([c + s * rng.standard_normal((per_mode, 2)) for c, s in zip(centers, stds)])


# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------


def test_gaussian_mass_within_matches_closed_forms():
    for r in (0.5, 1.0, 2.0, 3.0):
        assert gaussian_mass_within(r, 2) == pytest.approx(1 - math.exp(-r * r / 2), abs=1e-12)
        assert gaussian_mass_within(r, 1) == pytest.approx(math.erf(r / math.sqrt(2)), abs=1e-10)
        three = math.erf(r / math.sqrt(2)) - math.sqrt(2 / math.pi) * r * math.exp(-r * r / 2)
        assert gaussian_mass_within(r, 3) == pytest.approx(three, abs=1e-10)
        assert gaussian_mass_within(r, 4) == pytest.approx(1 - math.exp(-r * r / 2) * (1 + r * r / 2), abs=1e-12)
    assert gaussian_mass_within(0.0) == 0.0
    assert gaussian_mass_within(2.0) == pytest.approx(0.8647, abs=1e-4)
    assert gaussian_mass_within(3.0) == pytest.approx(0.9889, abs=1e-4)


@pytest.mark.parametrize("cls", [ToyGaussians, ToyGaussiansSpiral])
def test_mixture_components_match_the_generated_data(cls):
    data = cls(split="test", num_train=3000, num_test=3000)
    centers, stds = data.mixture_components()
    x, y = data.data.double().numpy(), data.targets.numpy()
    assert centers.shape == (len(stds), 2) and len(stds) == y.max() + 1 == (6 if cls is ToyGaussians else 10)
    for k in range(len(stds)):
        points = x[y == k]
        assert np.abs(points.mean(axis=0) - centers[k]).max() < 4 * stds[k] / math.sqrt(len(points)) + 1e-6
        assert (points - centers[k]).std() == pytest.approx(stds[k], rel=0.08)


@pytest.mark.parametrize("cls", [ToyGaussians, ToyGaussiansSpiral])
@pytest.mark.parametrize("radius", [2.0, 3.0])
def test_samples_of_the_true_mixture_cover_every_mode(cls, radius):
    centers, stds = cls(split="test", num_train=600, num_test=60).mixture_components()
    samples = mixture_samples(centers, stds, per_mode=2000)
    cov = mode_coverage(samples, centers, stds, radius=radius)
    expected = gaussian_mass_within(radius)  # 86.5 % at 2 std, 98.9 % at 3 std
    binomial_std = math.sqrt(expected * (1 - expected) / len(samples))
    assert cov["expected_share_near_modes"] == pytest.approx(expected)
    assert abs(cov["share_near_modes"] - expected) < 5 * binomial_std + 2e-3  # + a little overlap of modes
    assert cov["modes_captured"] == len(centers) and cov["captured"].all()
    assert cov["per_mode_counts"].sum() == round(cov["share_near_modes"] * len(samples))
    assert np.abs(cov["per_mode_share"] - expected / len(centers)).max() < 0.01
    assert cov["share_near_modes"] + cov["share_between_modes"] + cov["share_outside"] == pytest.approx(1.0)


def test_a_single_gaussian_captures_one_mode():
    data = ToyGaussians(split="test", num_train=600, num_test=60)
    centers, stds = data.mixture_components()
    samples = mixture_samples(centers[2:3], stds[2:3], per_mode=3000, seed=1)
    cov = mode_coverage(samples, centers, stds)
    assert cov["modes_captured"] == 1 and cov["captured"][2]
    assert cov["per_mode_counts"][2] == cov["per_mode_counts"].sum()
    assert cov["share_near_modes"] == pytest.approx(gaussian_mass_within(2.0), abs=0.03)


def test_uniform_samples_cover_much_less():
    data = ToyGaussians(split="test", num_train=600, num_test=600)
    centers, stds = data.mixture_components()
    x = data.data.numpy()
    samples = np.random.default_rng(2).uniform(x.min(axis=0), x.max(axis=0), size=(20000, 2))
    cov = mode_coverage(samples, centers, stds)
    assert cov["share_near_modes"] < 0.3 < gaussian_mass_within(2.0)
    assert cov["share_between_modes"] > 0.3
    assert cov["modes_captured"] < len(centers)


def test_distances_are_in_each_modes_stds_and_bad_input_raises():
    centers, stds = np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([1.0, 4.0])
    samples = np.array([[3.0, 0.0], [6.5, 0.0], [np.nan, 0.0]])
    assert np.allclose(standardized_distances(samples[:2], centers, stds), [[3.0, 7 / 4], [6.5, 3.5 / 4]])
    cov = mode_coverage(samples, centers, stds, radius=2.0, min_share=0.5)
    # 3 is 3 stds from mode 0 but 1.75 of mode 1's stds: nearest is mode 1; NaN is near nothing
    assert cov["per_mode_counts"].tolist() == [0, 2] and cov["modes_captured"] == 1
    assert cov["share_outside"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one std per mode"):
        mode_coverage(samples, centers, stds[:1])
    with pytest.raises(ValueError, match="positive"):
        mode_coverage(samples, centers, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="radius"):
        mode_coverage(samples, centers, stds, radius=0)


# ---------------------------------------------------------------------------------------------
# python -m experiment.analyze figure / modes
# ---------------------------------------------------------------------------------------------


def check_png(path, min_size=150):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    image = plt.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_size
    assert image[..., :3].std() > 0.01  # not a blank canvas
    return image.shape


@pytest.fixture(scope="module")
def run_dir(cascade_run):
    _, out, rc = cascade_run
    assert rc == 0
    return out


def test_figure_writes_one_row_per_model(run_dir, tmp_path, capsys):
    three = str(tmp_path / "s1.png")
    assert main(["figure", run_dir, "--grid", "12", "--field-grid", "6", "-n", "60", "--out", three,
                 "--stream-density", "0.3"]) == 0
    assert "Figure S1 of 3 nets" in capsys.readouterr().out  # unpruned, FT and WT at keep 0.3
    height3, width3, _ = check_png(three)
    two = str(tmp_path / "s1_two.png")
    assert main(["figure", run_dir, "--methods", "WT", "--keep", "0.6", "--grid", "12", "--field-grid", "6",
                 "-n", "60", "--out", two, "--divergence", "as-trained", "--stream-density", "0.3"]) == 0
    height2, width2, _ = check_png(two)
    assert width2 == width3 and height3 > 1.3 * height2


def test_density_grid_integrates_to_about_one(run_dir):
    from torchprune_flows.analysis import density_on_grid, field_on_grid
    from torchprune_flows.runner.runs import RunFolder

    run = RunFolder.open(run_dir)
    net = run.load_network(run.select("FT", 0.3))
    xs = ys = np.linspace(-6, 6, 41)
    density = density_on_grid(net, xs, ys, batch=500)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert density.shape == (41, 41) and (density >= 0).all()
    assert density.sum() * cell == pytest.approx(1.0, abs=0.05)
    # batches only change the adaptive steps a little (dopri5 at 1e-4)
    assert np.allclose(density, density_on_grid(net, xs, ys, batch=300), rtol=1e-3, atol=1e-6)
    u, v, blocks = field_on_grid(net, xs[:5], ys[:3])
    z = torch.tensor([[xs[1], ys[2]]], dtype=torch.float32)
    with torch.no_grad():
        f = net.chain[0].vector_field(torch.tensor(0.0), z)[0]
    assert blocks == 1 and u.shape == v.shape == (3, 5)
    assert (u[2, 1], v[2, 1]) == pytest.approx((-f[0].item(), -f[1].item()), rel=1e-5)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_modes_writes_csv_markdown_and_plot(run_dir, tmp_path, capsys):
    out = str(tmp_path / "modes")
    assert main(["modes", run_dir, "-n", "150", "--out", out]) == 0
    rows = _rows(os.path.join(out, "modes.csv"))
    assert [(r["method"], float(r["keep_ratio"])) for r in rows] == [
        ("ReferenceNet", 1.0), ("ThresNet", 0.6), ("ThresNet", 0.3), ("FilterThresNet", 0.6), ("FilterThresNet", 0.3)]
    for row in rows:
        assert 0.0 <= float(row["share_near_modes"]) <= 1.0 and row["error"] == ""
        assert 0 <= int(row["modes_captured"]) <= int(row["num_modes"]) == 6
        assert sum(map(int, row["per_mode_counts"].split(";"))) == round(150 * float(row["share_near_modes"]))
        assert float(row["prune_ratio"]) == pytest.approx(1 - float(row["keep_ratio"]))
    text = open(os.path.join(out, "modes.md")).read()
    assert "| 0 | WT | 70 |" in text and "86.5 %" in text
    check_png(os.path.join(out, "modes.png"))
    # the same seed gives the same numbers; a selection gives fewer rows
    again = str(tmp_path / "again")
    assert main(["modes", run_dir, "-n", "150", "--methods", "FT", "--keep", "0.3", "--out", again]) == 0
    selected = _rows(os.path.join(again, "modes.csv"))
    assert [r["step"] for r in selected] == [rows[0]["step"], rows[4]["step"]]
    assert [r["share_near_modes"] for r in selected] == [rows[0]["share_near_modes"], rows[4]["share_near_modes"]]


def test_default_outputs_go_to_the_runs_analysis_folder(run_dir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    assert main(["modes", copy, "--methods", "WT", "--keep", "0.3", "-n", "50"]) == 0
    assert main(["figure", copy, "--methods", "WT", "--grid", "8", "--field-grid", "4", "-n", "30",
                 "--stream-density", "0.2"]) == 0
    assert sorted(os.listdir(os.path.join(copy, "analysis"))) == ["figure_s1.png", "modes.csv", "modes.md",
                                                                  "modes.png"]


@pytest.mark.parametrize("command", ["figure", "modes"])
@pytest.mark.parametrize("args,message", [
    (["--methods", "XYZ"], "XYZ"),
    (["--nets", "4"], "net 4"),
    (["--keep", "1.5"], "--keep"),
    (["-n", "0"], "--num-samples"),
])
def test_bad_selection_is_one_line_and_exit_2(run_dir, capsys, tmp_path, command, args, message):
    assert main([command, run_dir, *args, "--out", str(tmp_path / "x.png")]) == 2
    one_error_line(capsys, message)
    assert not os.listdir(tmp_path)


def test_not_a_run_folder(tmp_path, capsys):
    for command in ("figure", "modes"):
        assert main([command, str(tmp_path)]) == 2
        one_error_line(capsys, "not an experiment folder")


def test_modes_needs_a_mixture_and_figure_needs_2d_data(run_dir, tmp_path, capsys, monkeypatch):
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    path = os.path.join(copy, "config.yaml")
    with open(path) as handle:
        cfg = yaml.safe_load(handle)
    cfg["network"]["dataset"] = "ToyMoons"  # 2-D, but not a Gaussian mixture
    with open(path, "w") as handle:
        yaml.safe_dump(cfg, handle)
    assert main(["modes", copy, "-n", "10"]) == 2
    one_error_line(capsys, "ToyMoons", "mixture")

    import torchprune_flows.runner.commands.figure as figure

    class ThreeD(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.zeros(3), 0

    monkeypatch.setattr(figure, "load_test_split", lambda run: ThreeD())
    assert main(["figure", run_dir, "--out", str(tmp_path / "f.png")]) == 2
    one_error_line(capsys, "2-D", "3 dimensions")
    assert not os.path.exists(tmp_path / "f.png")
