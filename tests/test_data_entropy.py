"""The data's own NLL (differential entropy) of the toy density sets: estimator, Jacobian, report."""
import math

import numpy as np
import pytest

from torchprune_flows.data.entropy import (gaussian_mixture_log_density, monte_carlo_nll, normalised_log_density,
                                           spiral_arms_log_density)
from torchprune_flows.data.toy import ToyGaussians, ToyGaussiansSpiral, ToyMoons, ToySpirals2


def gaussian_entropy(dim, sigma):
    """Closed form: ``0.5 D log(2 pi e sigma^2)``."""
    return 0.5 * dim * math.log(2 * math.pi * math.e * sigma**2)


@pytest.mark.parametrize("dim, sigma", [(2, 0.5), (3, 2.0)])
def test_single_gaussian_matches_the_closed_form(dim, sigma):
    rng = np.random.default_rng(0)
    x = sigma * rng.standard_normal((100_000, dim)) + 3.0
    value, se = monte_carlo_nll(lambda p: gaussian_mixture_log_density(p, [[3.0] * dim], [sigma]), x)
    assert 0 < se < 0.01
    assert abs(value - gaussian_entropy(dim, sigma)) < 4 * se


def test_normalising_by_s_lowers_the_nll_by_d_log_s():
    """z = (x - m) / s with x ~ N(m, sigma^2 I) is N(0, (sigma/s)^2 I): its entropy is the closed form
    at sigma / s, i.e. the unnormalised one minus D log s (not plus)."""
    rng = np.random.default_rng(1)
    sigma, mean, scale = 1.5, 0.7, 3.0
    x = sigma * rng.standard_normal((100_000, 2)) + mean
    log_px = lambda p: gaussian_mixture_log_density(p, [[mean, mean]], [sigma])  # noqa: E731
    value, se = monte_carlo_nll(normalised_log_density(log_px, mean, scale, 2), (x - mean) / scale)
    assert abs(value - gaussian_entropy(2, sigma / scale)) < 4 * se
    assert abs(value - (gaussian_entropy(2, sigma) - 2 * math.log(scale))) < 4 * se


def test_well_separated_mixture_is_log_k_plus_one_component():
    rng = np.random.default_rng(2)
    k, sigma = 5, 0.3
    centers = np.stack([100.0 * np.arange(k), np.zeros(k)], axis=1)  # 333 sigma apart
    labels = np.arange(50_000) % k
    x = centers[labels] + sigma * rng.standard_normal((len(labels), 2))
    value, se = monte_carlo_nll(lambda p: gaussian_mixture_log_density(p, centers, np.full(k, sigma)), x)
    assert abs(value - (math.log(k) + gaussian_entropy(2, sigma))) < 4 * se


def test_toy_gaussians_entropy_is_1_133_nats():
    """6 Gaussians of std 0.5, 4 apart (8 std: overlap negligible), standardised by s ~ sqrt(8.25)."""
    data = ToyGaussians(split="test")
    value, se = data.reference_nll()
    separated = math.log(6) + gaussian_entropy(2, 0.5) - 2 * math.log(data.std)
    assert se < 0.005
    assert abs(value - separated) < 4 * se + 1e-3
    assert abs(value - 1.133) < 0.01
    assert data.reference_nll() == (value, se)  # cached, seeded
    other = data.reference_nll(seed=1)
    assert other != (value, se) and abs(other[0] - value) < 5 * se


@pytest.mark.parametrize("cls, samples", [(ToyGaussians, None), (ToyGaussiansSpiral, None), (ToySpirals2, 20_000)])
def test_reference_agrees_with_the_test_points(cls, samples):
    """The Monte-Carlo entropy against the mean -log p of the real (normalised) test points."""
    data = cls(split="test")
    value, se = data.reference_nll(samples=samples)
    nll = -data.log_density(data.data.numpy().astype(np.float64))
    empirical_se = nll.std(ddof=1) / math.sqrt(len(nll))
    assert abs(nll.mean() - value) < 4 * math.hypot(se, empirical_se)


def _grid(half_width, step):
    axis = np.arange(-half_width, half_width + step / 2, step)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx.ravel(), yy.ravel()], axis=1), step**2


def test_gaussians_spiral_entropy_agrees_with_grid_quadrature():
    """-∫ p log p on a 2-D grid in the normalised space (component stds down to 0.05 there)."""
    data = ToyGaussiansSpiral(split="test")
    points, area = _grid(3.0, 0.01)
    log_p = data.log_density(points)
    p = np.exp(log_p)
    assert abs(p.sum() * area - 1) < 1e-4  # the density (with its Jacobian) integrates to 1
    grid_entropy = -(p * log_p).sum() * area
    value, se = data.reference_nll()
    assert abs(value - grid_entropy) < 4 * se


def _spiral_density_by_counting(point, noise=0.5, turns=math.radians(780), cells=2_000_000):
    """Independent of the clipping: the θ-measure of the arm inside the box from a fine midpoint
    grid (no window, no chords), both arms."""
    edges = np.linspace(0.0, turns, cells + 1)
    mid, weight = (edges[1:] + edges[:-1]) / 2, np.diff((edges / turns) ** 2)
    c1, c2 = -mid * np.cos(mid), mid * np.sin(mid)

    def arm(q):
        return weight[(c1 >= q[0] - noise) & (c1 <= q[0]) & (c2 >= q[1] - noise) & (c2 <= q[1])].sum()
    return (arm(point) + arm(-point)) / 2 / noise**2


def test_spiral_density_integrates_to_one_and_matches_a_direct_count():
    data = ToySpirals2(split="test")
    points, area = _grid(3.6, 0.012)  # the box noise is 0.5 / s ~ 0.105 here, the arms reach ~3.1
    assert abs(np.exp(data.log_density(points)).sum() * area - 1) < 1e-3
    x = data.data.numpy()[:12].astype(np.float64) * data.std + data.mean
    counted = np.array([_spiral_density_by_counting(p) for p in x])
    np.testing.assert_allclose(np.exp(spiral_arms_log_density(x, noise=0.5)), counted, rtol=1e-3)
    # every generated point lies on the support (a curve grazing the box's corner included)
    assert np.isfinite(data.log_density(data.data.numpy())).all()


def test_classification_sets_have_no_reference():
    with pytest.raises(TypeError, match="no true density"):
        ToyMoons(split="test").reference_nll()


def test_tiny_run_report_states_the_data_entropy(cascade_run):
    """The report of a ToyGaussians run (300 training points: its own normalisation) carries the
    data's entropy of that normalisation under the table."""
    exp, out, rc = cascade_run
    assert rc == 0
    data = ToyGaussians(split="test", num_train=300, num_test=200, seed=0)
    value, se = data.reference_nll()
    with open(f"{out}/report.md") as handle:
        lines = [line for line in handle.read().splitlines() if line.startswith("Data entropy")]
    assert len(lines) == 1
    assert f"{value:.3f} ± {se:.3f} nats" in lines[0]


def test_loss_plot_draws_the_data_entropy(tmp_path, monkeypatch):
    from torchprune_flows.runner import render

    figures = {}
    monkeypatch.setattr(render, "save_figure", lambda fig, path, dpi=120: figures.setdefault(path, fig))
    row = dict(net=0, repetition=0, method="ReferenceNet", keep_ratio=1.0, prune_ratio=0.0, cycle=0, params=10,
               params_original=10, test_loss=1.3, test_loss_se=0.01, test_metric=0.0, test_metric2=0.0,
               val_loss=1.3, nfe_forward=20, nfe_backward=30, flops=0.1, seconds_per_batch=0.1, epochs=1,
               seconds=1.0, converged=True, dataset="ToyGaussians", network="net", estimator="")
    pruned = dict(row, method="ThresNet", keep_ratio=0.5, prune_ratio=0.5, cycle=1, test_loss=1.2)
    render.write_report([row, pruned], str(tmp_path), data_entropy={"ToyGaussians": (1.1336, 0.002)})
    loss_fig = next(fig for path, fig in figures.items() if path.endswith("_loss.png"))
    entropy_lines = [line for line in loss_fig.axes[0].get_lines() if line.get_label() == "data entropy"]
    assert len(entropy_lines) == 1 and list(entropy_lines[0].get_ydata()) == [1.1336, 1.1336]
    nfe_fig = next(fig for path, fig in figures.items() if path.endswith("_nfe.png"))
    assert all(line.get_label() != "data entropy" for line in nfe_fig.axes[0].get_lines())
