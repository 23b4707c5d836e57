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


def test_dataset_size_can_be_reduced():
    d = tf.build_dataset("ToyGaussians", split="test", num_test=100)
    assert len(d) == 100
