"""True log-densities of the toy density sets and their expected NLL (the data's own entropy).

A flow's test NLL cannot go below the differential entropy of the data it models (in
expectation): that entropy, ``E[-log p(x)]`` under the true density, is the reference line of
the toy reports. No closed form exists for these mixtures, so it is a Monte-Carlo mean of
``-log p`` over samples of the generating process, with its standard error. Mixtures are summed
in log space (``logsumexp`` over components); the two-spiral density (a curve shifted by uniform
noise in a box, as torchdyn generates it) is the curve's probability inside the box at each point.

Normalising ``z = (x - m) / s`` in ``D`` dimensions multiplies the density by ``s^D``:
``-log p_z(z) = -log p_x(x) - D log s`` (see :func:`normalised_log_density`).
"""
import math

import numpy as np


def logsumexp(values, axis):
    """``log(sum(exp(values)))`` along ``axis`` without overflow (``-inf`` entries allowed)."""
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.squeeze(peak, axis) + np.log(np.sum(np.exp(values - peak), axis=axis))


def gaussian_mixture_log_density(x, centers, stds, weights=None):
    """``log p(x)`` of a mixture of isotropic Gaussians (``centers (K, D)``, ``stds (K,)``,
    ``weights (K,)``, default equal) at the rows of ``x (N, D)``."""
    x = np.asarray(x, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    stds = np.asarray(stds, dtype=np.float64)
    k, dim = centers.shape
    weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64)
    sq = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
    log_comp = -0.5 * sq / stds**2 - dim * np.log(stds) - 0.5 * dim * math.log(2 * math.pi)
    return logsumexp(np.log(weights) + log_comp, axis=1)


def _arm_theta_measure(x, noise, turns, grid):
    """``P(c(θ) ∈ [x - noise, x])`` per row of ``x (K, 2)``, ``c(θ) = (-θ cos θ, θ sin θ)`` and
    ``θ = turns · sqrt(U)`` (so ``P(θ ≤ t) = t² / turns²``): the arm's θ-measure inside the box.

    ``|c(θ)| = θ``, so only ``θ`` within ``noise / √2`` of ``|x - noise/2|`` can reach the box: a
    window of ``grid`` points, each chord between neighbours clipped to the box (Liang-Barsky),
    so that a curve grazing a corner still counts; the measure of the clipped θ from the CDF.
    The chords leave the arc by ``θ h² / 8`` (h the grid step): ~1e-5 at the paper's sizes."""
    reach = noise / math.sqrt(2)
    radius = np.sqrt(((x - noise / 2) ** 2).sum(1))
    lo = np.clip(radius - 1.01 * reach, 0.0, turns)
    hi = np.clip(radius + 1.01 * reach, 0.0, turns)
    theta = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, grid)[None]  # (K, grid)
    start = np.stack([-theta * np.cos(theta), theta * np.sin(theta)], axis=-1)  # (K, grid, 2)
    chord = start[:, 1:] - start[:, :-1]
    start = start[:, :-1]
    t_lo = np.zeros(chord.shape[:2])
    t_hi = np.ones(chord.shape[:2])
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in (0, 1):
            d = chord[..., axis]
            low = (x[:, None, axis] - noise - start[..., axis]) / d
            high = (x[:, None, axis] - start[..., axis]) / d
            entry, leave = np.minimum(low, high), np.maximum(low, high)
            flat = d == 0  # a chord parallel to this side: all in or all out
            within = (start[..., axis] >= x[:, None, axis] - noise) & (start[..., axis] <= x[:, None, axis])
            t_lo = np.where(flat, np.where(within, t_lo, 1.0), np.maximum(t_lo, entry))
            t_hi = np.where(flat, np.where(within, t_hi, 0.0), np.minimum(t_hi, leave))
    step = theta[:, 1:] - theta[:, :-1]
    a = theta[:, :-1] + np.clip(t_lo, 0, 1) * step
    b = theta[:, :-1] + np.clip(t_hi, 0, 1) * step
    return np.where(b > a, (b / turns) ** 2 - (a / turns) ** 2, 0.0).sum(1)


def spiral_arms_log_density(x, noise, turns=math.radians(780), grid=256, chunk=256):
    """``log p(x)`` of :func:`..toy.two_spirals` (torchdyn's spirals): arm 1 is
    ``(-θ cos θ, θ sin θ) + noise · (u1, u2)`` with ``θ = turns · sqrt(U)`` and ``u`` uniform in
    [0, 1)², arm 2 its point reflection, of equal weight. The noise is a box of side ``noise``, so
    ``p_1(x) = P(c(θ) ∈ [x - noise, x]) / noise²`` (:func:`_arm_theta_measure`),
    ``p(x) = (p_1(x) + p_1(-x)) / 2``; ``-inf`` off the support."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        both = _arm_theta_measure(block, noise, turns, grid) + _arm_theta_measure(-block, noise, turns, grid)
        with np.errstate(divide="ignore"):
            out[start:start + chunk] = np.log(both / 2) - 2 * math.log(noise)
    return out


def normalised_log_density(log_density, mean, std, dim):
    """``log p_z`` of ``z = (x - mean) / std`` given ``log p_x``: ``log p_x(mean + std z) + dim log std``."""
    return lambda z: log_density(np.asarray(z, dtype=np.float64) * std + mean) + dim * math.log(std)


def monte_carlo_nll(log_density, samples):
    """``(mean, standard error)`` of ``-log_density`` over ``samples`` (rows drawn from the density)."""
    nll = -log_density(samples)
    return float(nll.mean()), float(nll.std(ddof=1) / math.sqrt(len(nll)))
