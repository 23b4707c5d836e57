"""Toy datasets: sizes, splits, seeding, normalisation and the generators' geometry."""
import math

import numpy as np
import pytest
import torch

import torchprune_flows as tf
from torchprune_flows.data.toy import gaussians_on_circle

SIZES = {"ToyGaussians": (16380, 8190), "ToyGaussiansSpiral": (16380, 8190), "ToySpirals2": (32768, 16384),
         "ToyMoons": (1024, 512), "ToyConcentric": (1024, 512), "ToySpirals": (2048, 1024)}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes_and_validation_split(name):
    n_train, n_test = SIZES[name]
    train, val, test = (tf.build_dataset(name, split=s) for s in ("train", "val", "test"))
    assert len(train) + len(val) == n_train and len(test) == n_test
    assert len(val) == round(0.1 * n_train)
    trainval = tf.build_dataset(name, root="/nonexistent", train=True, download=True, transform=None)
    assert len(trainval) == n_train  # torchprune's view: train including validation
    x, y = train[0]
    assert x.shape == (2,) and x.dtype == torch.float32 and y.dtype == torch.long


def test_normalised_by_one_global_mean_and_std_of_the_training_points():
    full = tf.build_dataset("ToyGaussians", split="trainval")
    assert abs(full.data.mean().item()) < 1e-5
    assert full.data.std().item() == pytest.approx(1.0, abs=1e-4)
    test = tf.build_dataset("ToyGaussians", split="test")
    assert torch.allclose(test.data * full.std + full.mean, test.data * test.std + test.mean)


def test_generation_is_seeded():
    a = tf.build_dataset("ToySpirals2", split="train", seed=3).data
    b = tf.build_dataset("ToySpirals2", split="train", seed=3).data
    c = tf.build_dataset("ToySpirals2", split="train", seed=4).data
    assert torch.equal(a, b) and not torch.equal(a, c)
    train = tf.build_dataset("ToyGaussians", split="train").data
    test = tf.build_dataset("ToyGaussians", split="test").data
    assert not torch.equal(train[:100], test[:100])


def test_gaussians_sit_on_a_circle_with_the_stated_spread():
    rng = np.random.default_rng(0)
    x, labels = gaussians_on_circle(6000, rng)
    for k in range(6):
        pts = x[labels == k]
        center = 4 * np.array([math.cos(2 * math.pi * k / 6), math.sin(2 * math.pi * k / 6)])
        assert np.linalg.norm(pts.mean(0) - center) < 0.05
        assert pts.std(0) == pytest.approx([0.5, 0.5], abs=0.03)


@pytest.mark.parametrize("name, generator, kwargs", [
    # the arguments torchprune v2.2.0's ToyGaussians / ToyGaussiansSpiral pass to torchdyn
    ("ToyGaussians", "gaussians", {"n_gaussians": 6, "std_gaussians": 0.5, "radius": 4, "dim": 2}),
    ("ToyGaussiansSpiral", "gaussians_spiral", {"n_gaussians": 10, "n_gaussians_per_loop": 6, "dim": 2,
                                                "radius_start": 4.0, "radius_end": 1.0,
                                                "std_gaussians_start": 0.3, "std_gaussians_end": 0.1}),
])
def test_mixtures_are_the_paper_s_torchdyn_mixtures(name, generator, kwargs):
    """The paper generated its toy densities with torchdyn: each of torchdyn's components has one
    of ours at its mean (up to 4 standard errors; torchdyn adds a 1e-3 offset per mode) with its
    spread (labels may be numbered from another start)."""
    torchdyn_data = pytest.importorskip("torchdyn.datasets")
    torch.manual_seed(0)
    per_mode = 4000
    x, labels = torchdyn_data.ToyDataset().generate(n_samples=per_mode, dataset_type=generator, **kwargs)
    d = tf.build_dataset(name, split="test", num_train=60, num_test=30)
    centers, stds = d.mixture_components()
    centers, stds = centers * d.std + d.mean, stds * d.std  # back to unnormalised coordinates
    assert len(centers) == kwargs["n_gaussians"]
    matched = []
    for k in range(len(centers)):
        pts = x[labels == k].double().numpy()
        j = int(np.argmin(np.linalg.norm(centers - pts.mean(0), axis=1)))
        matched.append(j)
        assert np.abs(pts.mean(0) - centers[j]).max() < 4 * stds[j] / math.sqrt(per_mode) + 2e-3
        assert pts.std(0) == pytest.approx([stds[j]] * 2, rel=0.06)
    assert sorted(matched) == list(range(len(centers)))


def _ks_distance(a, b):
    """Largest gap between the empirical distribution functions of samples ``a`` and ``b``."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = [np.searchsorted(np.sort(v), grid, side="right") / len(v) for v in (a, b)]
    return np.abs(cdf[0] - cdf[1]).max()


@pytest.mark.parametrize("name, generator, kwargs", [
    ("ToySpirals2", "spirals", {"noise": 0.5}),  # torchprune's arguments
    ("ToySpirals", "spirals", {"noise": 0.9}),
    ("ToyMoons", "moons", {"noise": 0.1}),
])
def test_spirals_and_moons_are_distributed_as_torchdyn_s(name, generator, kwargs):
    """Same distribution as torchdyn's samples (which the paper used): per class, the radius and
    both coordinates differ by less than a two-sample Kolmogorov distance of 0.03 (10,000 points
    per class each: 1.6 times the distance at which equal distributions are rejected at 5 %; the
    generators we had were 0.04 to 0.5 apart)."""
    torchdyn_data = pytest.importorskip("torchdyn.datasets")
    np.random.seed(0)
    n = 20000
    x, y = torchdyn_data.ToyDataset().generate(n_samples=n if generator == "moons" else n // 2,
                                               dataset_type=generator, **kwargs)
    x, y = x.numpy(), y.numpy()
    cls = type(tf.build_dataset(name, split="test", num_train=20, num_test=10))
    ours, labels = cls.generate(None, n, np.random.default_rng(0))
    assert len(ours) == len(x)
    for label in (0, 1):
        a, b = ours[labels == label], x[y == label]
        for ours_stat, theirs_stat in zip((np.linalg.norm(a, axis=1), a[:, 0], a[:, 1]),
                                          (np.linalg.norm(b, axis=1), b[:, 0], b[:, 1])):
            assert _ks_distance(ours_stat, theirs_stat) < 0.03


def test_dataset_size_can_be_reduced():
    d = tf.build_dataset("ToyGaussians", split="test", num_test=100)
    assert len(d) == 100


@pytest.mark.parametrize("name", sorted(SIZES))
def test_stream_ids_keep_the_data_the_datasets_always_had(name):
    """Each dataset's stream is the one its class name used to pick (the sum of its characters),
    now an explicit constant: the same points, bit for bit, as before the constant existed."""
    cls = type(tf.build_dataset(name, split="test", num_train=20, num_test=10))
    assert cls.STREAM_ID == sum(map(ord, name))
    seed = 5
    rng = np.random.default_rng([seed, 1, sum(map(ord, name))])  # the test part's stream
    x, y = cls.generate(None, 10, rng)
    order = rng.permutation(len(x))
    train = cls(split="trainval", seed=seed, num_train=20, num_test=10)
    expected = (x[order] - train.mean) / train.std
    test = cls(split="test", seed=seed, num_train=20, num_test=10)
    assert torch.equal(test.data, torch.as_tensor(expected, dtype=torch.float32))
    assert torch.equal(test.targets, torch.as_tensor(y[order], dtype=torch.long))


def test_renaming_a_dataset_class_keeps_its_data():
    from torchprune_flows.data.toy import ToyDataset, ToyMoons

    renamed = type("SomeOtherName", (ToyMoons,), {})
    assert torch.equal(renamed(seed=2).data, ToyMoons(seed=2).data)
    ids = [cls.STREAM_ID for cls in ToyDataset.__subclasses__()]
    assert len(set(ids)) == len(ids)  # every dataset draws from a stream of its own
    with pytest.raises(TypeError, match="STREAM_ID"):
        type("NoStream", (ToyDataset,), {"num_train": 4, "num_test": 4,
                                         "generate": lambda self, n, rng: (np.zeros((n, 2)), np.zeros(n))})()
