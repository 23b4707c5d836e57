"""Mode coverage of samples from a 2-D (or any-D) Gaussian-mixture target.

Pure numpy functions, no torch. A sample belongs to its *nearest* mode, where distances are
measured in that mode's standard deviations (``|x - c_k| / s_k``), so a wide mode and a narrow
one are judged on the same scale. A sample lies *near* its mode when that distance is at most
``radius``; a mode counts as *captured* when at least ``min_share`` of all samples lie near it.

For samples of the target itself the share near the modes is the chance mass of an isotropic
D-dimensional Gaussian within ``radius`` standard deviations (:func:`gaussian_mass_within`):
for D = 2 that is ``1 - exp(-radius**2 / 2)``, 86.5 % at radius 2 and 98.9 % at radius 3. A
flow that spreads samples between the modes (the unpruned nets of the paper's Figure S1) lowers
it; a flow that drops modes lowers the number of captured modes.
"""
import math

import numpy as np

__all__ = ["gaussian_mass_within", "standardized_distances", "mode_coverage"]


def gaussian_mass_within(radius, dim=2):
    """P(|x| <= radius) for x ~ N(0, I_dim): the regularised lower incomplete gamma P(dim/2, r^2/2)."""
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    a, x = dim / 2.0, radius * radius / 2.0
    if x == 0.0:
        return 0.0
    if dim % 2 == 0:  # closed form: 1 - exp(-x) * sum_{k < a} x^k / k!
        term, total = 1.0, 1.0
        for k in range(1, int(a)):
            term *= x / k
            total += term
        return 1.0 - math.exp(-x) * total
    # series P(a, x) = x^a e^-x / Gamma(a + 1) * sum_k x^k / ((a + 1) ... (a + k)); fine for toy D
    term = total = 1.0 / a
    n = 0
    while abs(term) > 1e-16 * abs(total) and n < 10000:
        n += 1
        term *= x / (a + n)
        total += term
    return min(1.0, total * math.exp(-x + a * math.log(x) - math.lgamma(a)))


def _as_arrays(samples, centers, stds):
    samples = np.asarray(samples, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    stds = np.asarray(stds, dtype=np.float64).reshape(-1)
    if samples.ndim != 2:
        raise ValueError(f"samples must have shape (N, D), got {samples.shape}")
    if centers.ndim != 2 or centers.shape[1] != samples.shape[1]:
        raise ValueError(f"centers must have shape (K, {samples.shape[1]}), got {centers.shape}")
    if len(stds) != len(centers):
        raise ValueError(f"need one std per mode: {len(centers)} centers, {len(stds)} stds")
    if not (stds > 0).all():
        raise ValueError("mode standard deviations must be positive")
    return samples, centers, stds


def standardized_distances(samples, centers, stds):
    """(N, K) distances ``|x_n - c_k| / s_k`` of every sample to every mode (in that mode's stds)."""
    samples, centers, stds = _as_arrays(samples, centers, stds)
    diff = samples[:, None, :] - centers[None, :, :]
    return np.sqrt((diff * diff).sum(axis=2)) / stds[None, :]


def mode_coverage(samples, centers, stds, radius=2.0, min_share=None, chunk=65536):
    """Coverage of ``samples`` (N, D) against modes ``centers`` (K, D) with stds ``stds`` (K,).

    ``min_share`` is the share of all samples a mode needs near it to count as captured; the
    default is 20 % of its expected share 1/K (i.e. ``0.2 / K``). Non-finite samples count as
    near no mode. Returns a dict:

    * ``share_near_modes``: share of samples within ``radius`` stds of their nearest mode;
    * ``modes_captured``: number of captured modes; ``captured``: (K,) bool array;
    * ``per_mode_counts``: (K,) int array, samples near each mode (each sample counted once,
      at its nearest mode); ``per_mode_share``: the same divided by N;
    * ``share_between_modes``: share of samples near no mode but inside the mixture's extent
      (no farther from the centers' mean than the farthest mode plus ``radius`` of its stds);
      ``share_outside``: the rest (far away or non-finite);
    * ``num_samples``, ``num_modes``, ``radius``, ``min_share``, and
      ``expected_share_near_modes``: the share a perfect sampler gets for well-separated modes.
    """
    samples, centers, stds = _as_arrays(samples, centers, stds)
    n, k = len(samples), len(centers)
    if n == 0:
        raise ValueError("no samples")
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    if min_share is None:
        min_share = 0.2 / k
    finite = np.isfinite(samples).all(axis=1)
    nearest = np.full(n, -1, dtype=np.int64)
    nearest_distance = np.full(n, np.inf)
    for start in range(0, n, chunk):  # (chunk, K) at a time: bounded memory for many samples
        part = slice(start, start + chunk)
        dist = standardized_distances(np.where(finite[part, None], samples[part], 0.0), centers, stds)
        nearest[part] = dist.argmin(axis=1)
        nearest_distance[part] = dist[np.arange(len(dist)), nearest[part]]
    nearest_distance[~finite] = np.inf
    near = nearest_distance <= radius
    counts = np.bincount(nearest[near], minlength=k).astype(np.int64)
    captured = counts >= min_share * n - 1e-9
    middle = centers.mean(axis=0)
    extent = (np.linalg.norm(centers - middle, axis=1) + radius * stds).max()
    inside = finite & (np.linalg.norm(np.where(finite[:, None], samples, 0.0) - middle, axis=1) <= extent)
    between = ~near & inside
    return {
        "share_near_modes": float(near.mean()),
        "modes_captured": int(captured.sum()),
        "captured": captured,
        "per_mode_counts": counts,
        "per_mode_share": counts / n,
        "share_between_modes": float(between.mean()),
        "share_outside": float((~near & ~inside).mean()),
        "num_samples": n,
        "num_modes": k,
        "radius": float(radius),
        "min_share": float(min_share),
        "expected_share_near_modes": gaussian_mass_within(radius, samples.shape[1]),
    }
