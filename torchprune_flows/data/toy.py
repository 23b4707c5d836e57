"""Seeded 2-D toy data: density targets (Gaussians, spirals) and classification sets.

Each dataset is generated from ``seed`` (train and test from separate streams), normalised by
one global mean and standard deviation of its training points, and yields ``(x, y)`` where y is
the mixture component (density sets) or the class (classification sets).
"""
import math

import numpy as np
import torch

from ..registry import register_dataset
from .entropy import gaussian_mixture_log_density, monte_carlo_nll, normalised_log_density, spiral_arms_log_density
from .rows import RowDataset
from .splits import carve_validation, resolve_split


def circle_components(n_modes=6, radius=4.0, std=0.5):
    """``(centers (K, 2), stds (K,))`` of K Gaussians evenly spaced on a circle, unnormalised."""
    angles = 2 * math.pi * np.arange(n_modes) / n_modes
    centers = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centers, np.full(n_modes, float(std))


def spiral_components(n_modes=10, modes_per_loop=6, radius=(4.0, 1.0), std=(0.3, 0.1)):
    """``(centers (K, 2), stds (K,))`` of K Gaussians on a spiral whose radius and std shrink
    linearly from the first to the last mode, unnormalised: torchdyn's ``gaussians_spiral`` with
    the arguments torchprune's ``ToyGaussiansSpiral`` passes (6 modes per loop; mode i at angle
    2 pi (i + 1) / 6)."""
    frac = np.arange(n_modes) / (n_modes - 1)
    angles = 2 * math.pi * (np.arange(n_modes) + 1) / modes_per_loop
    r = radius[0] + (radius[1] - radius[0]) * frac
    stds = std[0] + (std[1] - std[0]) * frac
    return r[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1), stds


def sample_mixture(n, rng, centers, stds):
    """``n`` points cycling through the components (label = component), Gaussian around each."""
    labels = np.arange(n) % len(centers)
    return centers[labels] + stds[labels, None] * rng.standard_normal((n, 2)), labels


def gaussians_on_circle(n, rng, **shape):
    return sample_mixture(n, rng, *circle_components(**shape))


def gaussians_on_spiral(n, rng, **shape):
    return sample_mixture(n, rng, *spiral_components(**shape))


def two_spirals(n, rng, noise):
    """Two arms of ``n // 2`` points each (label = arm), as torchdyn's ``spirals`` (which the
    paper's data came from): angle sqrt(U) * 780 degrees, noise uniform in [0, noise) added to
    each coordinate of the first arm, the second arm its point reflection (noise included)."""
    per_arm = n // 2
    theta = np.sqrt(rng.uniform(size=(per_arm, 1))) * math.radians(780)
    arm = np.concatenate([-np.cos(theta) * theta + rng.uniform(size=(per_arm, 1)) * noise,
                          np.sin(theta) * theta + rng.uniform(size=(per_arm, 1)) * noise], axis=1)
    return np.concatenate([arm, -arm]), np.repeat([0, 1], per_arm)


def two_moons(n, rng, noise=0.1):
    """torchdyn's ``moons`` (the paper's data): ``n // 2`` points evenly spaced on the upper arc,
    the rest on the lower one, each point shifted along the diagonal by one uniform draw in
    [0, noise) (torchdyn adds the same draw to both coordinates)."""
    upper, lower = n // 2, n - n // 2
    a, b = np.linspace(0, math.pi, upper), np.linspace(0, math.pi, lower)
    points = np.concatenate([np.stack([np.cos(a), np.sin(a)], axis=1),
                             np.stack([1 - np.cos(b), 0.5 - np.sin(b)], axis=1)])
    return points + rng.uniform(size=(n, 1)) * noise, np.repeat([0, 1], [upper, lower])


def concentric_circles(n, rng, radii=(0.75, 1.5), noise=0.1):
    half = n // 2
    angles = rng.uniform(0, 2 * math.pi, n)
    r = np.repeat(radii, [half, n - half])
    points = r[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return points + noise * rng.standard_normal((n, 2)), np.repeat([0, 1], [half, n - half])


_REFERENCE_NLL_CACHE = {}


class ToyDataset(RowDataset):
    """Base class: subclasses set ``STREAM_ID``, ``num_train``, ``num_test`` and ``generate(n, rng)``.

    ``STREAM_ID`` picks the dataset's random stream (with the seed and the part, train or test):
    an explicit constant, distinct per dataset, so that renaming a class keeps its data. The
    datasets below use the values they always had (the sum of the characters of their names).

    The signature is torchprune's dataset signature (``root``, ``train``, ``download``,
    ``transform``, ``file_dir``), plus ``split`` ("train", "val", "test"), ``seed``, and
    ``num_train`` / ``num_test`` to generate fewer (or more) points than the paper's sizes.
    """

    STREAM_ID = None
    num_train = num_test = 0

    def __init__(self, root=None, train=True, download=True, transform=None, split=None, seed=0,
                 file_dir=None, num_train=None, num_test=None):
        for name, value in (("num_train", num_train), ("num_test", num_test)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer (None: the dataset's own size), got {value!r}")
        self.num_train = num_train if num_train is not None else self.num_train
        self.num_test = num_test if num_test is not None else self.num_test
        self.split = resolve_split(train, split)
        self.transform = transform
        train_x, _ = self._generated(seed, "train")
        mean, std = train_x.mean(), train_x.std()
        x, y = self._generated(seed, "test" if self.split == "test" else "train")
        if self.split in ("train", "val"):
            rows = carve_validation(len(x))[0 if self.split == "train" else 1]
            x, y = x[rows], y[rows]
        self.data = torch.as_tensor((x - mean) / std, dtype=torch.float32)
        self.targets = torch.as_tensor(y, dtype=torch.long)
        self.mean, self.std = float(mean), float(std)

    def _generated(self, seed, part):
        rng = np.random.default_rng([seed, 0 if part == "train" else 1, self.stream_id()])
        x, y = self.generate(self.num_train if part == "train" else self.num_test, rng)
        order = rng.permutation(len(x))
        return x[order], y[order]

    @classmethod
    def stream_id(cls):
        if cls.STREAM_ID is None:
            raise TypeError(f"{cls.__name__} sets no STREAM_ID (an int of its own that picks its random stream)")
        return cls.STREAM_ID

    def generate(self, n, rng):
        raise NotImplementedError

    #: whether :meth:`raw_log_density` (and so :meth:`reference_nll`) exists: the density sets
    HAS_DENSITY = False
    #: Monte-Carlo samples of :meth:`reference_nll` (its standard error falls as 1/sqrt of it)
    REFERENCE_SAMPLES = 200_000

    def raw_log_density(self, x):
        """``log p(x)`` of the generating process at unnormalised points ``x (N, 2)``; only the
        density sets define it."""
        raise TypeError(f"{type(self).__name__} has no true density (a classification set)")

    def log_density(self, z):
        """The true density's ``log p(z)`` at points ``z (N, 2)`` of this dataset's normalised space."""
        return normalised_log_density(self.raw_log_density, self.mean, self.std, 2)(z)

    def reference_nll(self, samples=None, seed=0):
        """``(value, standard error)`` in nats: the data's differential entropy in the normalised
        space, i.e. the true density's expected test NLL, a floor for a flow's expected NLL.

        A Monte-Carlo mean over ``samples`` (default :attr:`REFERENCE_SAMPLES`) fresh draws of the
        generating process (stream ``seed``, apart from the train and test streams), normalised
        as the data are; cached per class, normalisation, ``samples`` and ``seed``.
        """
        samples = samples or self.REFERENCE_SAMPLES
        key = (type(self), self.mean, self.std, samples, seed)
        if key not in _REFERENCE_NLL_CACHE:
            if not self.HAS_DENSITY:
                raise TypeError(f"{type(self).__name__} has no true density (a classification set)")
            rng = np.random.default_rng([seed, 2, self.stream_id()])
            x, _ = self.generate(samples, rng)
            _REFERENCE_NLL_CACHE[key] = monte_carlo_nll(self.log_density, (x - self.mean) / self.std)
        return _REFERENCE_NLL_CACHE[key]

    def _normalised_components(self, centers, stds):
        """Mixture components in the normalised coordinates of ``self.data``."""
        centers = (np.asarray(centers, dtype=np.float64) - self.mean) / self.std
        return centers, np.asarray(stds, dtype=np.float64) / self.std


@register_dataset("ToyGaussians")
class ToyGaussians(ToyDataset):
    """6 Gaussians (std 0.5) on a circle of radius 4."""

    STREAM_ID = 1258
    HAS_DENSITY = True

    num_train, num_test = 16380, 8190

    def generate(self, n, rng):
        return gaussians_on_circle(n, rng)

    def mixture_components(self):
        """``(centers (6, 2), stds (6,))`` of the generating mixture in normalised coordinates."""
        return self._normalised_components(*circle_components())

    def raw_log_density(self, x):
        return gaussian_mixture_log_density(x, *circle_components())


@register_dataset("ToyGaussiansSpiral")
class ToyGaussiansSpiral(ToyDataset):
    """10 Gaussians on a spiral, 6 per loop, radius 4 -> 1, std 0.3 -> 0.1."""

    STREAM_ID = 1877
    HAS_DENSITY = True

    num_train, num_test = 16380, 8190

    def generate(self, n, rng):
        return gaussians_on_spiral(n, rng)

    def mixture_components(self):
        """``(centers (10, 2), stds (10,))`` of the generating mixture in normalised coordinates."""
        return self._normalised_components(*spiral_components())

    def raw_log_density(self, x):
        return gaussian_mixture_log_density(x, *spiral_components())


@register_dataset("ToySpirals2")
class ToySpirals2(ToyDataset):
    """Two-arm spiral density (torchdyn's), noise 0.5, 2^14 points per arm."""

    STREAM_ID = 1100
    HAS_DENSITY = True

    num_train, num_test = 32768, 16384

    REFERENCE_SAMPLES = 100_000  # the curve's quadrature costs ~60 µs per sample on one thread

    def generate(self, n, rng):
        return two_spirals(n, rng, noise=0.5)

    def raw_log_density(self, x):
        return spiral_arms_log_density(x, noise=0.5)


@register_dataset("ToyMoons")
class ToyMoons(ToyDataset):
    """Two moons (torchdyn's), noise 0.1 (classification)."""

    STREAM_ID = 840

    num_train, num_test = 1024, 512

    def generate(self, n, rng):
        return two_moons(n, rng)


@register_dataset("ToyConcentric")
class ToyConcentric(ToyDataset):
    """Two concentric circles of radius 0.75 and 1.5, noise 0.1 (classification)."""

    STREAM_ID = 1348

    num_train, num_test = 1024, 512

    def generate(self, n, rng):
        return concentric_circles(n, rng)


@register_dataset("ToySpirals")
class ToySpirals(ToyDataset):
    """Two-arm spiral (torchdyn's), noise 0.9 (classification)."""

    STREAM_ID = 1050

    num_train, num_test = 2048, 1024

    def generate(self, n, rng):
        return two_spirals(n, rng, noise=0.9)
