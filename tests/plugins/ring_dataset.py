"""A dataset plugin, as a user would write one: a noisy ring of radius 2 (a toy density set).

Loaded by the tests as ``--plugin tests/plugins/ring_dataset.py``; nothing in the package
knows it. It subclasses the toy base class, so it is seeded, split and normalised like the
shipped toy sets and counts as a torchprune toy dataset under the bridge.
"""
import numpy as np

from torchprune_flows import register_dataset
from torchprune_flows.data.toy import ToyDataset


@register_dataset("ToyRingPlugin")
class ToyRingPlugin(ToyDataset):
    """Points on a circle of radius 2 with Gaussian noise 0.2 (label 0)."""

    STREAM_ID = 9001
    num_train, num_test = 512, 256

    def generate(self, n, rng):
        angle = rng.uniform(0, 2 * np.pi, n)
        points = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1) + 0.2 * rng.normal(size=(n, 2))
        return points, np.zeros(n, dtype=np.int64)
