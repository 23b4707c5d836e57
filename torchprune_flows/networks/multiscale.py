"""Multiscale image flows ``ffjord_multiscale_mnist`` / ``ffjord_multiscale_cifar`` (FFJORD's ODENVP).

Logit transform, then one stage per scale (as many as the image halves while H, W >= 4): each
non-final stage is 2 CNFs, a 2x2 squeeze, 2 CNFs, after which half of the channels are factored
out to the latent; the final stage is 2 CNFs. Every CNF has a 4-layer 3x3 concat-conv vector
field ``C -> 64 -> 64 -> 64 -> C`` (softplus), Hutchinson divergence with a Gaussian probe,
dopri5 at atol = rtol = 1e-5, adjoint gradients and a learnable end time.
"""
import torch

from ..cnf import CNF, FlowNetwork, FlowSequence, SolverSpec
from ..cnf.solver import solver_spec
from ..cnf.fixed_layers import LogitTransform, Squeeze
from ..pruning import PrunableMixin
from ..registry import register_network
from .conv import ConcatConvField

IMAGE_SOLVER = dict(method="dopri5", atol=1e-5, rtol=1e-5, adjoint=True)


def number_of_scales(height, width):
    """How many times the image halves while both sides are at least 4."""
    scales = 0
    while height >= 4 and width >= 4:
        scales, height, width = scales + 1, height // 2, width // 2
    return scales


class MultiscaleFlow(PrunableMixin, FlowNetwork):
    """Multiscale CNF over images of ``data_shape`` (C, H, W) with values in [0, 1].

    ``forward(x)`` returns the :class:`FlowNetwork` protocol dict; ``z`` (B, C*H*W)
    concatenates the factored-out halves of every stage and the last stage's output.
    ``hidden_channels`` is the tuple of the hidden convs' channels of every vector field.
    """

    def __init__(self, data_shape, hidden_channels=(64, 64, 64), blocks=2, activation="softplus", solver=None,
                 probe="gaussian", alpha=1e-6, end_time=1.0, train_end_time=True, num_scales=None):
        channels, height, width = data_shape
        num_scales = num_scales or number_of_scales(height, width)

        def cnfs(c):
            return [CNF(ConcatConvField(c, hidden_channels, activation), divergence="hutchinson", probe=probe,
                        solver=solver or SolverSpec(**IMAGE_SOLVER), end_time=end_time, train_end_time=train_end_time)
                    for _ in range(blocks)]

        stages, shapes = [], []
        c, h, w = channels, height, width
        for i in range(num_scales):
            layers = [LogitTransform(alpha)] if i == 0 else []
            layers += cnfs(c)
            if i < num_scales - 1:
                layers += [Squeeze()] + cnfs(4 * c)
                c, h, w = 4 * c, h // 2, w // 2
            stages.append(FlowSequence(layers))
            shapes.append((c, h, w))
            if i < num_scales - 1:
                c //= 2
        super().__init__(stages, data_shape)
        self.stage_shapes = shapes  # output shape of every stage before factoring out

    def forward(self, inputs):
        x = inputs
        delta_logp = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        latents = []
        for i, stage in enumerate(self.chain):
            x, delta_logp = stage(x, delta_logp)
            if i < len(self.chain) - 1:
                half = x.shape[1] // 2
                latents.append(x[:, half:].reshape(x.shape[0], -1))
                x = x[:, :half]
        latents.append(x.reshape(x.shape[0], -1))
        return self.outputs(inputs, torch.cat(latents, dim=1), delta_logp)

    def inverse(self, z):
        z = z.reshape(z.shape[0], -1)
        sizes = [c * h * w // 2 for c, h, w in self.stage_shapes[:-1]]
        sizes.append(z.shape[1] - sum(sizes))
        parts = torch.split(z, sizes, dim=1)
        delta_logp = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        x = None
        for i in reversed(range(len(self.chain))):
            c, h, w = self.stage_shapes[i]
            if i == len(self.chain) - 1:
                x = parts[i].reshape(-1, c, h, w)
            else:
                x = torch.cat([x, parts[i].reshape(-1, c - c // 2, h, w)], dim=1)
            x, delta_logp = self.chain[i](x, delta_logp, reverse=True)
        return x


def _image_factory(default_shape):
    def factory(num_classes=None, num_in_channels=None, hidden=(64, 64, 64), blocks=2, image_size=None,
                probe="gaussian", alpha=1e-6, end_time=1.0, train_end_time=True, num_scales=None, **solver_kwargs):
        """torchprune's signature: ``num_classes`` is ignored (a density model); ``num_in_channels``
        and ``image_size`` override the image shape; ``hidden`` (the keyword of ``network.kwargs``)
        is the tuple of the vector fields' hidden channels, ``MultiscaleFlow``'s ``hidden_channels``."""
        channels, size = default_shape[0], default_shape[1]
        shape = (num_in_channels or channels, image_size or size, image_size or size)
        solver = solver_spec(dict(IMAGE_SOLVER, **solver_kwargs))
        return MultiscaleFlow(shape, tuple(hidden), blocks, solver=solver, probe=probe, alpha=alpha,
                              end_time=end_time, train_end_time=train_end_time, num_scales=num_scales)

    return factory


#: a small, fast member of each image flow (two scales of 8x8 images, one CNF per step)
SMALL_IMAGE_FLOW = dict(image_size=8, hidden=(4,), blocks=1, atol=1e-3, rtol=1e-3)
register_network("ffjord_multiscale_mnist", examples=[("ffjord_multiscale_mnist", SMALL_IMAGE_FLOW)])(
    _image_factory((1, 28, 28)))
register_network("ffjord_multiscale_cifar", examples=[("ffjord_multiscale_cifar", SMALL_IMAGE_FLOW)])(
    _image_factory((3, 32, 32)))
