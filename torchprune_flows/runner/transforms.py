"""torchprune's transform specs ``[{type, kwargs}]`` -> a callable (torchvision + ``RandomNoise``)."""
import torch

from torchprune_flows.registry.suggest import did_you_mean


class RandomNoise:
    """Uniform dequantisation of [0, 1] pixels: ``x' = (x * (n - 1) + u) / n``, u ~ U[0, 1)."""

    def __init__(self, normalization=255.0):
        self.normalization = float(normalization)

    def __call__(self, x):
        n = self.normalization
        return (x * n + torch.rand_like(x)) / (n + 1.0)


def _lookup(name):
    if name == "RandomNoise":
        return RandomNoise
    import torchvision.transforms as tv

    if hasattr(tv, name):
        return getattr(tv, name)
    options = ["RandomNoise"] + [n for n in dir(tv) if n[:1].isupper()]
    hint = did_you_mean(name, options, n=3)
    hint = f"; {hint}" if hint else ""
    raise ValueError(f"unknown transform '{name}'{hint}")


def build_transform(specs):
    """None for no transforms, else the composition of the specs in order."""
    if not specs:
        return None
    steps = [_lookup(spec["type"])(**spec.get("kwargs", {})) for spec in specs]
    if len(steps) == 1:
        return steps[0]

    def composed(x):
        for step in steps:
            x = step(x)
        return x

    return composed
