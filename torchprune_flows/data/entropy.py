"""True log-densities of the toy density sets and their expected NLL (the data's own entropy).

A flow's test NLL cannot go below the differential entropy of the data it models (in
expectation): that entropy, ``E[-log p(x)]`` under the true density, is the reference line of
the toy reports. No closed form exists for these mixtures, so it is a Monte-Carlo mean of
``-log p`` over samples of the generating process, with its standard error. Mixtures are summed
in log space (``logsumexp`` over components); the two-spiral density (a curve blurred by
Gaussian noise) integrates the noise kernel along the curve by Gauss-Legendre quadrature.

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


def spiral_arms_log_density(x, noise, turns=3 * math.pi, panels=64, order=8, chunk=2048):
    """``log p(x)`` of :func:`..toy.two_spirals`: two arms ``±(-θ cos θ, θ sin θ)`` of equal weight,
    ``θ = turns · sqrt(U)`` (density ``2θ / turns²``), blurred by isotropic noise of std ``noise``.

    The integral over θ is Gauss-Legendre quadrature (``panels`` × ``order`` nodes); the default
    512 nodes agree with 6,400 to 1e-11 nats on the shipped spiral.
    """
    nodes, node_weights = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, turns, panels + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    theta = (half * nodes + (edges[1:] + edges[:-1])[:, None] / 2).ravel()
    with np.errstate(divide="ignore"):  # the θ density is 0 at θ = 0
        log_w = np.log((half * node_weights).ravel()) + np.log(2 * theta / turns**2)
    arm = np.stack([-theta * np.cos(theta), theta * np.sin(theta)], axis=1)
    curve = np.concatenate([arm, -arm])
    log_w = np.concatenate([log_w, log_w]) + math.log(0.5)
    log_kernel_norm = -math.log(2 * math.pi * noise**2)
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        sq = ((block[:, None, :] - curve[None]) ** 2).sum(-1)
        out[start:start + chunk] = logsumexp(log_w - 0.5 * sq / noise**2, axis=1) + log_kernel_norm
    return out


def normalised_log_density(log_density, mean, std, dim):
    """``log p_z`` of ``z = (x - mean) / std`` given ``log p_x``: ``log p_x(mean + std z) + dim log std``."""
    return lambda z: log_density(np.asarray(z, dtype=np.float64) * std + mean) + dim * math.log(std)


def monte_carlo_nll(log_density, samples):
    """``(mean, standard error)`` of ``-log_density`` over ``samples`` (rows drawn from the density)."""
    nll = -log_density(samples)
    return float(nll.mean()), float(nll.std(ddof=1) / math.sqrt(len(nll)))
